"""The member contract (design §2) for every backbone: shape, no batch coupling, determinism, OOV
mapping, trainability, rebuild from hparams, cost counting and fixed-seed golden values."""

from __future__ import annotations

import json

import pytest
import torch

from models_fixtures import SMALL, VOCAB_SIZES, oov_path, small_feature_map, small_model, valid_ids, wild_ids
from ttsrec.errors import UserError
from ttsrec.models import BACKBONES, backbone_class, build_model, default_hparams, model_cost, parse_members
from ttsrec.models.checkpoint import load_member, save_member
from ttsrec.models.layers import EMBEDDING_INITS

# torch.manual_seed(0) + small_model(name) on valid_ids(4, seed=3); torch 2.13 CPU.
GOLDEN = {
    "fm": [-0.5241446, 0.4601076, 0.1926357, 0.3532125],
    "deepfm": [-0.6849232, 0.3068005, 0.0448423, 0.1985679],
    "ipnn": [-0.2575299, -0.2438498, -0.2601735, -0.251733],
    "dcn": [0.09832, -0.0090445, 0.0791002, 0.0356643],
    "dcnv2": [-0.1336807, -0.0560086, -0.0788597, -0.0193307],
    "fnn": [0.0010321, 0.0124352, 0.012077, 0.0061377],
    "wukong": [0.1959662, -0.045493, 0.04786, 0.086668],
    "rankmixer": [-0.0886554, -0.0867328, -0.1367798, -0.0852205],
    "finalmlp": [-0.0652389, -0.0476801, -0.064921, -0.0483028],
}

all_backbones = pytest.mark.parametrize("name", BACKBONES)
all_inits = pytest.mark.parametrize("init", EMBEDDING_INITS)


def test_registry_lists_the_nine_backbones_of_the_paper():
    paper = {"fm", "deepfm", "ipnn", "dcn", "dcnv2", "fnn", "wukong", "rankmixer", "finalmlp"}
    assert set(BACKBONES) == paper
    assert set(GOLDEN) == set(BACKBONES)


@all_backbones
def test_output_is_a_float32_logit_per_row(name):
    logit = small_model(name)(valid_ids(5))
    assert logit.shape == (5, 1) and logit.dtype == torch.float32


@all_inits
@all_backbones
def test_row_alone_equals_row_inside_a_batch_of_256(name, init):
    model, ids = small_model(name, init=init), valid_ids(256, seed=1)
    with torch.no_grad():
        batch = model(ids)
        alone = torch.cat([model(ids[i:i + 1]) for i in range(0, 256, 17)])
        others = ids.clone()
        others[1:] = valid_ids(255, seed=2)
        first_with_other_rows = model(others)[0]
    # Separate GEMM calls round differently (~1e-7); batch coupling would show as O(1e-2).
    torch.testing.assert_close(alone, batch[::17], rtol=0, atol=1e-6)
    torch.testing.assert_close(first_with_other_rows, batch[0], rtol=0, atol=1e-6)


@all_inits
@all_backbones
def test_eval_mode_is_deterministic(name, init):
    model, ids = small_model(name, init=init), valid_ids(64)
    with torch.no_grad():
        assert torch.equal(model(ids), model(ids))
    assert torch.equal(small_model(name, init=init)(ids), model(ids))  # same seed, same weights


@all_inits
@all_backbones
def test_any_int64_ids_give_finite_logits_equal_to_the_oov_path(name, init):
    model, ids = small_model(name, init=init), wild_ids(300)
    assert not torch.equal(ids, oov_path(ids))
    with torch.no_grad():
        logit = model(ids)
        assert torch.isfinite(logit).all()
        assert torch.equal(logit, model(oov_path(ids)))


def test_field_offsets_and_oov_rows_of_the_shared_table():
    model = small_model("fnn")
    emb = model.embedding
    ids = torch.tensor([[2, 9, 6, 49, 1, 19], [-5, 10, 99, 2**50, -1, 20]])
    offsets = [0, 3, 13, 20, 70, 72]
    with torch.no_grad():
        got = emb(ids)
    for f, offset in enumerate(offsets):
        assert torch.equal(got[0, f], emb.weight[offset + int(ids[0, f])])
        assert torch.equal(got[1, f], emb.weight[offset])  # out of range -> the field's OOV row
    assert emb.weight.shape[0] == sum(VOCAB_SIZES)


@all_backbones
def test_gradients_reach_the_embedding_rows_that_were_looked_up(name):
    model = small_model(name).train()
    ids = torch.zeros(4, len(VOCAB_SIZES), dtype=torch.int64) + torch.tensor([[1], [0], [1], [0]])
    model(ids).pow(2).sum().backward()
    grad = model.embedding.weight.grad
    used = torch.tensor([0, 1, 3, 4, 13, 14, 20, 21, 70, 71, 72, 73])
    assert grad[used].abs().sum() > 0
    unused = torch.ones(grad.shape[0], dtype=torch.bool)
    unused[used] = False
    assert grad[unused].abs().sum() == 0


@all_backbones
def test_a_few_training_steps_lower_the_loss(name):
    model = small_model(name).train()
    ids = valid_ids(512, seed=4)
    labels = ((ids[:, 1] % 2 == 0) ^ (ids[:, 3] < 10)).float()  # learnable from two fields
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(model(ids).squeeze(1), labels)

    before = loss().item()
    for _ in range(30):
        optimiser.zero_grad()
        loss().backward()
        optimiser.step()
    assert loss().item() < 0.9 * before


@all_backbones
def test_fixed_seed_golden_logits(name):
    with torch.no_grad():
        logit = small_model(name)(valid_ids(4, seed=3))[:, 0]
    torch.testing.assert_close(logit, torch.tensor(GOLDEN[name]), rtol=1e-4, atol=1e-6)


@all_backbones
def test_hparams_are_resolved_json_and_rebuild_the_model(name, tmp_path):
    model = small_model(name)
    hparams = json.loads(json.dumps(model.hparams))
    assert hparams == model.hparams and set(hparams) == set(default_hparams(name))
    assert model.backbone == name and model.vocab_sizes == VOCAB_SIZES
    rebuilt = build_model(name, model.vocab_sizes, **hparams)
    rebuilt.load_state_dict(model.state_dict())
    ids = valid_ids(8)
    assert torch.equal(rebuilt.eval()(ids), model(ids))
    path = save_member(tmp_path / "m.pt", model, backbone=name, hparams=model.hparams, seed=0,
                       vocab_sizes=model.vocab_sizes, feature_map_hash=small_feature_map().hash)
    assert torch.equal(load_member(path).model(ids), model(ids))


@all_backbones
def test_knobs_are_hparams_and_grow_the_model(name):
    cls, base = backbone_class(name), dict(SMALL[name])
    defaults = default_hparams(name)
    assert set(cls.depth_knobs) | set(cls.width_knobs) <= set(defaults)
    assert cls.width_knobs, "every backbone needs a width knob"
    size = model_cost(build_model(name, VOCAB_SIZES, **base)).params
    for knob in cls.depth_knobs:
        value = base.get(knob, defaults[knob])
        deeper = [*value, value[-1]] if isinstance(value, list) else value + 1
        assert model_cost(build_model(name, VOCAB_SIZES, **{**base, knob: deeper})).params > size, knob
    for knob in cls.width_knobs:
        value = base.get(knob, defaults[knob])
        wider = [2 * v for v in value] if isinstance(value, list) else 2 * value
        assert model_cost(build_model(name, VOCAB_SIZES, **{**base, knob: wider})).params > size, knob


def test_paper_defaults():
    assert default_hparams("dcnv2") == {"embed_dim": 16, "mlp_dims": [1024, 512, 256], "num_cross_layers": 3,
                                        "zero_cross_bias": False, "num_modules": 1,
                                        "embedding_init": "xavier"}
    assert default_hparams("wukong")["num_layers"] == 3 and default_hparams("wukong")["rank"] == 24
    assert default_hparams("rankmixer")["num_layers"] == 3 and default_hparams("rankmixer")["expansion"] == 2
    assert build_model("rankmixer", [5] * 39).hparams["token_dim"] == 39


def test_cost_counts_the_matrix_products_of_fnn_exactly():
    model = small_model("fnn")
    flat = len(VOCAB_SIZES) * 8
    cost = model_cost(model)
    assert cost.macs_per_sample == flat * 32 + 32 * 16 + 16 * 1
    assert cost.embedding_params == sum(VOCAB_SIZES) * 8
    dense = (flat + 1) * 32 + (32 + 1) * 16 + 16 + 1
    assert cost.params == cost.embedding_params + dense and cost.dense_weight_bytes == 4 * dense
    assert model.training is False


@all_backbones
def test_cost_of_every_backbone(name):
    cost = model_cost(small_model(name))
    assert cost.params == sum(p.numel() for p in small_model(name).parameters())
    assert (cost.macs_per_sample == 0) if name == "fm" else (cost.macs_per_sample > cost.dense_params // 2)


def test_dcnv2_cross_layers_are_full_matrices_and_dcn_rank_one():
    v2, v1 = model_cost(small_model("dcnv2")), model_cost(small_model("dcn"))
    flat = len(VOCAB_SIZES) * 8
    assert v2.macs_per_sample - v1.macs_per_sample == 2 * (flat * flat - flat)


def test_bad_backbone_or_hparams_are_user_errors():
    with pytest.raises(UserError, match="unknown backbone"):
        build_model("resnet", VOCAB_SIZES)
    with pytest.raises(UserError, match="unknown hparam"):
        build_model("fm", VOCAB_SIZES, mlp_dims=[8])
    for bad in ({"mlp_dims": "64,32"}, {"mlp_dims": [64, 0]}, {"embed_dim": 0}, {"embed_dim": 2.5},
                {"num_cross_layers": True}):
        with pytest.raises(UserError):
            build_model("dcnv2", VOCAB_SIZES, **bad)
    with pytest.raises(UserError, match="multiple"):
        build_model("rankmixer", VOCAB_SIZES, token_dim=8)
    with pytest.raises(UserError, match="num_heads"):
        build_model("finalmlp", VOCAB_SIZES, mlp_dims=[15], num_heads=2)


def test_parse_members():
    assert parse_members("dcnv2*3") == [("dcnv2", 0), ("dcnv2", 1), ("dcnv2", 2)]
    assert parse_members("wukong+rankmixer+dcnv2") == [("wukong", 0), ("rankmixer", 0), ("dcnv2", 0)]
    assert parse_members(" DCNv2 * 2 + wukong+dcnv2", seeds=10) == [
        ("dcnv2", 10), ("dcnv2", 11), ("wukong", 10), ("dcnv2", 12)]
    assert parse_members("fm+fnn", seeds=[7, 3]) == [("fm", 7), ("fnn", 3)]
    for bad in ("", "dcnv2*0", "dcnv2*", "nope*2", "dcnv2**2", "fm++fnn"):
        with pytest.raises(UserError):
            parse_members(bad)
    with pytest.raises(UserError, match="seeds"):
        parse_members("fm*2", seeds=[1])


@pytest.mark.parametrize("name", ["fm", "deepfm"])
def test_official_fm_has_no_first_order_term_and_no_bias(name: str) -> None:
    """first_order=false, bias=false: the logit is the second-order term (+ the MLP for DeepFM) only."""
    torch.manual_seed(0)
    model = build_model(name, VOCAB_SIZES, embed_dim=4, first_order=False, bias=False,
                        **({"mlp_dims": [8]} if name == "deepfm" else {})).eval()
    full = build_model(name, VOCAB_SIZES, embed_dim=4, **({"mlp_dims": [8]} if name == "deepfm" else {}))
    assert model.linear is None and model.bias is None
    assert model_cost(full).params - model_cost(model).params == sum(VOCAB_SIZES) + 1
    ids = torch.randint(0, min(VOCAB_SIZES), (6, len(VOCAB_SIZES)))
    expected = model.fm(model.embedding(ids))
    if name == "deepfm":
        expected = expected + model.mlp(model.embedding(ids).flatten(1))
    torch.testing.assert_close(model(ids), expected)


def test_dcnv2_zero_cross_bias_starts_the_cross_biases_at_zero() -> None:
    torch.manual_seed(0)
    zero = build_model("dcnv2", VOCAB_SIZES, embed_dim=4, mlp_dims=[8], zero_cross_bias=True)
    torch.manual_seed(0)
    default = build_model("dcnv2", VOCAB_SIZES, embed_dim=4, mlp_dims=[8])
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in zero.cross.weights)
    assert all(torch.count_nonzero(layer.bias) > 0 for layer in default.cross.weights)
    assert build_model("dcn", VOCAB_SIZES, embed_dim=4, mlp_dims=[8], zero_cross_bias=True) is not None


@pytest.mark.parametrize("value", ["yes", 2, 0.5, [1]])
def test_bool_hparams_take_only_booleans(value: object) -> None:
    with pytest.raises(UserError):
        build_model("fm", VOCAB_SIZES, first_order=value)


@pytest.mark.parametrize("name", ["dcnv2", "dcn", "wukong", "rankmixer"])
def test_paper_width_scaling_is_k_parallel_modules_each_with_its_own_table(name: str) -> None:
    """num_modules=K: K embedding tables and K interaction stacks in one model; MACs grow with K."""
    cls = backbone_class(name)
    assert cls.module_width_knob == "num_modules" and cls.module_depth_knob in default_hparams(name)
    torch.manual_seed(0)
    one = build_model(name, VOCAB_SIZES, **SMALL[name])
    three = build_model(name, VOCAB_SIZES, **SMALL[name], num_modules=3)
    one_cost, three_cost = model_cost(one), model_cost(three)
    assert three_cost.embedding_params == 3 * one_cost.embedding_params
    assert three_cost.macs_per_sample > 2 * one_cost.macs_per_sample
    ids = wild_ids(5)
    assert three(ids).shape == (5, 1) and torch.isfinite(three(ids)).all()
    # Each table matters: changing module 3's table changes the output.
    with torch.no_grad():
        before = three.eval()(ids).clone()
        three.extra_tables[1].weight.add_(1.0)
        assert not torch.allclose(three(ids), before)


@pytest.mark.parametrize("name", ["dcnv2", "wukong", "rankmixer"])
def test_paper_depth_scaling_stacks_interaction_modules_not_mlp_layers(name: str) -> None:
    cls = backbone_class(name)
    torch.manual_seed(0)
    base = build_model(name, VOCAB_SIZES, **SMALL[name])
    knob = cls.module_depth_knob
    deeper = build_model(name, VOCAB_SIZES, **{**SMALL[name], knob: base.hparams[knob] + 2})
    assert deeper.hparams["mlp_dims"] == base.hparams["mlp_dims"]
    assert model_cost(deeper).macs_per_sample > model_cost(base).macs_per_sample


def test_num_modules_must_be_positive() -> None:
    for name in ("dcnv2", "wukong", "rankmixer"):
        with pytest.raises(UserError):
            build_model(name, VOCAB_SIZES, num_modules=0)


def test_embedding_inits_set_the_scale_the_docs_say() -> None:
    torch.manual_seed(0)
    sizes, dim = [3, 10, 1000], 8
    xavier = build_model("fnn", sizes, embed_dim=dim, mlp_dims=[4]).embedding.weight
    assert xavier.abs().max() <= (6 / (sum(sizes) + dim)) ** 0.5
    field = build_model("fnn", sizes, embed_dim=dim, mlp_dims=[4],
                        embedding_init="xavier_field").embedding.weight
    assert field[:3].abs().max() > (6 / (sum(sizes) + dim)) ** 0.5  # a small field starts larger
    assert field[13:].abs().max() <= (6 / (1000 + dim)) ** 0.5
    normal = build_model("fnn", sizes, embed_dim=dim, mlp_dims=[4], embedding_init="normal").embedding.weight
    assert 0.5e-4 < float(normal.detach().std()) < 2e-4
    fm = build_model("fm", sizes, embed_dim=dim, embedding_init="normal")  # first-order table too
    assert fm.linear is None or float(fm.linear.weight.detach().abs().max()) < 1e-3


def test_the_init_is_recorded_in_the_checkpoint_and_old_ones_read_as_xavier(tmp_path) -> None:
    model = small_model("dcnv2", init="normal")
    assert model.hparams["embedding_init"] == "normal"
    path = save_member(tmp_path / "m.pt", model, backbone="dcnv2", hparams=model.hparams, seed=0,
                       vocab_sizes=model.vocab_sizes, feature_map_hash="h")
    assert load_member(path).hparams["embedding_init"] == "normal"
    old = {k: v for k, v in model.hparams.items() if k != "embedding_init"}  # written before the choice
    path = save_member(tmp_path / "old.pt", model, backbone="dcnv2", hparams=old, seed=0,
                       vocab_sizes=model.vocab_sizes, feature_map_hash="h")
    loaded = load_member(path)
    assert loaded.hparams["embedding_init"] == "xavier"
    ids = valid_ids(8)
    assert torch.equal(loaded.model(ids), model(ids))


@pytest.mark.parametrize("value", ["uniform", "", 1, None])
def test_an_unknown_embedding_init_is_refused(value: object) -> None:
    with pytest.raises(UserError, match="unknown embedding init"):
        build_model("fnn", VOCAB_SIZES, embedding_init=value)
