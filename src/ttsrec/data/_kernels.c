/* The per-value loops of `tts-data prepare` (see kernels.pyi for each function's contract).
 *
 * Splitting lines into fields, giving every token a dense code through a per-field open-addressing
 * table, counting codes and turning codes into ids are a few nanoseconds of work per value; written in
 * Python or polars expressions they cost 30-100 ns (a string object, a shared dictionary, a frame per
 * chunk). Every function takes numpy arrays through the buffer protocol, checks their sizes, and runs
 * without the GIL, so two threads code two fields of one chunk at once.
 *
 * A token table is arrays owned by Python (`TextTable`, `IntTable` in dictionary.py): `slots` (uint64
 * pairs key, meta; meta = train count << 32 | long << 31 | code, 0 = empty), `state` (int64: tokens,
 * arena bytes used), `counts` (int64 per code: what the slots do not hold: the missing value's count,
 * the general path's counts, a slot count's overflow past 2^32) and, for text, `offsets` + `arena` (the
 * tokens' bytes, in code order); for integers `keys` (the tokens). A text token of at most 8 bytes and
 * no NUL byte is its own key (its bytes packed: exact); any other is `long`: keyed by a hash and
 * compared byte for byte with its copy in the arena. Counting in the slot costs no cache miss beyond
 * the probe's own. Codes start at 1; 0 is the missing value. A table never grows here: a function
 * returns the row it reached when one is full, and the caller grows it and calls again from there.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define KEY_MIX 0x9E3779B97F4A7C15ULL
#define ONES 0x0101010101010101ULL
#define LOW7 0x7F7F7F7F7F7F7F7FULL

static inline uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDULL;
    x ^= x >> 33;
    return x;
}

static inline uint64_t load64(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w; /* little-endian machines only (checked at import) */
}

/* 0x80 in each zero byte of v, 0 elsewhere (exact: no borrow between bytes). */
static inline uint64_t zero_bytes(uint64_t v) { return ~(((v & LOW7) + LOW7) | v | LOW7); }

/* Tokens a table of `pairs` slots takes before it grows: load factor 0.7. */
static inline int64_t capacity(int64_t pairs) { return pairs * 7 / 10; }

#define LONG_TOKEN (1ULL << 31)
#define CODE_BITS 0x7FFFFFFFULL
#define COUNT_ONE (1ULL << 32)

/* The token's key; sets *is_long for a token that is not its own key (over 8 bytes, or holding NUL). */
static inline uint64_t text_key(const uint8_t *data, int64_t len, int64_t a, int64_t n, int *is_long) {
    if (n <= 8) {
        uint64_t low = n == 8 ? ~0ULL : (1ULL << (8 * n)) - 1, key = 0;
        if (a + 8 <= len) {
            key = load64(data + a) & low;
        } else {
            for (int64_t k = 0; k < n; k++) key |= (uint64_t)data[a + k] << (8 * k);
        }
        *is_long = (zero_bytes(key) & low) != 0; /* a NUL byte: the length is not in the key */
        return *is_long ? mix(key ^ ((uint64_t)n * KEY_MIX)) : key;
    }
    *is_long = 1;
    uint64_t h = (uint64_t)n * KEY_MIX;
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) h = mix(h ^ load64(data + a + k)) * KEY_MIX;
    if (k < n) h = mix(h ^ load64(data + a + n - 8)) * KEY_MIX; /* its last 8 bytes (n > 8: all its own) */
    return h;
}

/* A slot's index (its low bits): one multiply, the product's high half folded into the low one. */
static inline uint64_t spread(uint64_t x) {
    x = (x ^ (x >> 31)) * KEY_MIX;
    return x ^ (x >> 32);
}
static inline uint64_t text_slot(uint64_t key, uint64_t is_long) { return spread(key ^ (is_long << 63)); }
static inline uint64_t int_slot(uint64_t key) { return spread(key); }

/* Count one train row of the slot's code: in the slot, its overflow past 2^32 in counts[code]. */
static inline void count_in_slot(uint64_t *meta, int64_t *counts) {
    *meta += COUNT_ONE;
    if (*meta < COUNT_ONE) counts[*meta & CODE_BITS] += 1LL << 32;
}

/* ---- argument helpers: a numpy array as a buffer of at least `count` items of `size` bytes ---- */

/* A table's slots: a power of two of pairs (probes wrap with a mask). */
static int slots_ok(int64_t pairs) {
    if (pairs >= 1 && !(pairs & (pairs - 1))) return 1;
    PyErr_SetString(PyExc_ValueError, "slots: a power of two of (key, meta) pairs");
    return 0;
}

typedef struct {
    Py_buffer view;
    int held;
} Buf;

static int get_buf(PyObject *obj, Buf *b, int writable, Py_ssize_t size, Py_ssize_t count, const char *name) {
    if (PyObject_GetBuffer(obj, &b->view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return 0;
    b->held = 1;
    if (b->view.itemsize != size) {
        PyErr_Format(PyExc_TypeError, "%s: items of %zd bytes expected, got %zd", name, size, b->view.itemsize);
        return 0;
    }
    if (b->view.len / size < count) {
        PyErr_Format(PyExc_ValueError, "%s: %zd items needed, has %zd", name, count, b->view.len / size);
        return 0;
    }
    return 1;
}

static void release(Buf *bufs, int n) {
    for (int i = 0; i < n; i++)
        if (bufs[i].held) PyBuffer_Release(&bufs[i].view);
}

#define ITEMS(b, size) ((b).view.len / (size))

/* split_fields(data, start, end, sep, ncols, bounds, row0) -> lines written, or -1 */
static PyObject *split_fields(PyObject *self, PyObject *args) {
    PyObject *o_data, *o_bounds;
    Py_ssize_t start, end, row0;
    int sep, ncols;
    if (!PyArg_ParseTuple(args, "OnniiOn", &o_data, &start, &end, &sep, &ncols, &o_bounds, &row0)) return NULL;
    if (ncols < 1 || start < 0 || end < start || end > INT32_MAX || row0 < 0) {
        PyErr_SetString(PyExc_ValueError, "split_fields: ncols >= 1 and 0 <= start <= end < 2^31, row0 >= 0");
        return NULL;
    }
    Buf b[2];
    memset(b, 0, sizeof b);
    if (!get_buf(o_data, &b[0], 0, 1, end, "data") || !get_buf(o_bounds, &b[1], 1, 4, 0, "bounds")) {
        release(b, 2);
        return NULL;
    }
    const uint8_t *data = b[0].view.buf;
    int32_t *bounds = b[1].view.buf;
    int64_t rows = ITEMS(b[1], 4) / (ncols + 1);
    int64_t result;
    Py_BEGIN_ALLOW_THREADS
    int64_t row = row0, k = 0, last = ncols - 1;
    uint64_t seps = ONES * (uint8_t)sep, newlines = ONES * 10, returns = ONES * 13;
    result = -2;
    if (row < rows) bounds[row] = (int32_t)start;
    for (int64_t i = start; i < end && result == -2; i += 8) {
        uint64_t hits = 0;
        if (i + 8 <= end) {
            uint64_t w = load64(data + i);
            hits = zero_bytes(w ^ seps) | zero_bytes(w ^ newlines) | zero_bytes(w ^ returns);
        } else {
            for (int64_t t = 0; t < end - i; t++) {
                uint8_t c = data[i + t];
                if (c == sep || c == 10 || c == 13) hits |= 0x80ULL << (8 * t);
            }
        }
        while (hits) {
            int64_t j = i + (__builtin_ctzll(hits) >> 3);
            hits &= hits - 1;
            uint8_t c = data[j];
            if (c == (uint8_t)sep) {
                if (++k > last || row >= rows) { result = -1; break; }
                bounds[k * rows + row] = (int32_t)(j + 1);
            } else if (c == 10) {
                if (k != last || row >= rows) { result = -1; break; }
                bounds[(int64_t)ncols * rows + row] = (int32_t)(j + 1);
                row++;
                k = 0;
                if (row < rows) bounds[row] = (int32_t)(j + 1);
            } else {
                result = -1;
                break;
            }
        }
    }
    if (result == -2) result = (end > start && data[end - 1] != 10) ? -1 : row - row0;
    Py_END_ALLOW_THREADS
    release(b, 2);
    return PyLong_FromLongLong(result);
}

/* binary_labels(data, lo, hi, out) -> True when every label is exactly "0" or "1" */
static PyObject *binary_labels(PyObject *self, PyObject *args) {
    PyObject *o[4];
    if (!PyArg_ParseTuple(args, "OOOO", &o[0], &o[1], &o[2], &o[3])) return NULL;
    Buf b[4];
    memset(b, 0, sizeof b);
    if (!get_buf(o[3], &b[3], 1, 4, 0, "out")) { release(b, 4); return NULL; }
    Py_ssize_t n = ITEMS(b[3], 4);
    if (!get_buf(o[0], &b[0], 0, 1, 0, "data") || !get_buf(o[1], &b[1], 0, 4, n, "lo") ||
        !get_buf(o[2], &b[2], 0, 4, n, "hi")) {
        release(b, 4);
        return NULL;
    }
    const uint8_t *data = b[0].view.buf;
    const int32_t *lo = b[1].view.buf, *hi = b[2].view.buf;
    float *out = b[3].view.buf;
    Py_ssize_t len = b[0].view.len;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < n && ok; r++) {
        if (hi[r] - lo[r] != 2 || lo[r] < 0 || lo[r] >= len) { ok = 0; break; }
        uint8_t c = data[lo[r]];
        if (c == '0') out[r] = 0.0f;
        else if (c == '1') out[r] = 1.0f;
        else ok = 0;
    }
    Py_END_ALLOW_THREADS
    release(b, 4);
    return PyBool_FromLong(ok);
}

/* Optional counting: counts[code] += 1 for each row r with train[r] set (no train: no counting). */
typedef struct {
    const uint8_t *train;
    int64_t *counts;
    int64_t n_counts;
} Tally;

static int get_tally(PyObject *o_train, PyObject *o_counts, Buf *b, Py_ssize_t n, Tally *t) {
    if (!get_buf(o_train, &b[0], 0, 1, 0, "train") || !get_buf(o_counts, &b[1], 1, 8, 0, "counts")) return 0;
    if (b[0].view.len && b[0].view.len < n) {
        PyErr_SetString(PyExc_ValueError, "train: one per row, or none");
        return 0;
    }
    t->train = b[0].view.len ? b[0].view.buf : NULL;
    t->counts = b[1].view.buf;
    t->n_counts = ITEMS(b[1], 8);
    return 1;
}

#define AHEAD 16

/* code_text's look-ahead for row q: its key and first slot (asked for now), and a look further ahead at
 * the bytes of the row after (in ring position q % AHEAD). */
static inline void stage(const uint8_t *data, int64_t len, const int32_t *lo, const int32_t *hi, int64_t trim,
                         const uint8_t *nulls, int64_t q, int64_t n, const uint64_t *slots, uint64_t mask,
                         uint64_t *keys, uint64_t *first, int *longs) {
    int64_t a = lo[q], m = (int64_t)hi[q] - trim - a, k = q % AHEAD;
    if (q + AHEAD < n && lo[q + AHEAD] >= 0 && lo[q + AHEAD] < len) __builtin_prefetch(data + lo[q + AHEAD]);
    if ((nulls ? nulls[q] : m == 0) || a < 0 || m < 0 || a + m > len) return; /* the probe's row checks */
    keys[k] = text_key(data, len, a, m, &longs[k]);
    first[k] = text_slot(keys[k], longs[k]) & mask;
    __builtin_prefetch(&slots[2 * first[k]]);
}

/* code_text(data, lo, hi, trim, nulls, first, slots, state, offsets, arena, codes, train, counts)
 * -> row reached */
static PyObject *code_text(PyObject *self, PyObject *args) {
    PyObject *o_data, *o_lo, *o_hi, *o_nulls, *o_slots, *o_state, *o_offsets, *o_arena, *o_codes, *o_train,
        *o_counts;
    Py_ssize_t trim, first;
    if (!PyArg_ParseTuple(args, "OOOnOnOOOOOOO", &o_data, &o_lo, &o_hi, &trim, &o_nulls, &first, &o_slots,
                          &o_state, &o_offsets, &o_arena, &o_codes, &o_train, &o_counts))
        return NULL;
    Buf b[11];
    memset(b, 0, sizeof b);
    Tally tally;
    if (!get_buf(o_codes, &b[8], 1, 4, 0, "codes")) { release(b, 11); return NULL; }
    Py_ssize_t n = ITEMS(b[8], 4);
    if (!get_buf(o_data, &b[0], 0, 1, 0, "data") || !get_buf(o_lo, &b[1], 0, 4, n, "lo") ||
        !get_buf(o_hi, &b[2], 0, 4, n, "hi") || !get_buf(o_nulls, &b[3], 0, 1, 0, "nulls") ||
        !get_buf(o_slots, &b[4], 1, 8, 2, "slots") || !get_buf(o_state, &b[5], 1, 8, 2, "state") ||
        !get_buf(o_offsets, &b[6], 1, 8, 1, "offsets") || !get_buf(o_arena, &b[7], 1, 1, 0, "arena") ||
        !get_tally(o_train, o_counts, &b[9], n, &tally)) {
        release(b, 11);
        return NULL;
    }
    if (b[3].view.len && b[3].view.len < n) {
        release(b, 11);
        PyErr_SetString(PyExc_ValueError, "nulls: one per row, or none");
        return NULL;
    }
    if (tally.train && tally.n_counts <= ((int64_t *)b[5].view.buf)[0]) {
        release(b, 11);
        PyErr_SetString(PyExc_ValueError, "counts: shorter than the table's codes");
        return NULL;
    }
    const uint8_t *data = b[0].view.buf, *nulls = b[3].view.len ? b[3].view.buf : NULL;
    const int32_t *lo = b[1].view.buf, *hi = b[2].view.buf;
    uint64_t *slots = b[4].view.buf;
    int64_t *state = b[5].view.buf, *offsets = b[6].view.buf;
    uint8_t *arena = b[7].view.buf;
    uint32_t *codes = b[8].view.buf;
    int64_t len = b[0].view.len, n_offsets = ITEMS(b[6], 8), arena_len = b[7].view.len;
    int64_t pairs = ITEMS(b[4], 8) / 2, room = capacity(pairs);
    uint64_t mask = (uint64_t)pairs - 1;
    int64_t r = first, bad = 0;
    if (!slots_ok(pairs)) {
        release(b, 11);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    int64_t size = state[0], used = state[1];
    /* Row r + AHEAD's key is made, and its slot asked for, while row r is probed: a big table's probe
     * misses the caches, and the rows' probes do not depend on each other. */
    uint64_t ahead_key[AHEAD], ahead_slot[AHEAD];
    int ahead_long[AHEAD];
    for (int64_t q = r; q < r + AHEAD && q < n; q++)
        stage(data, len, lo, hi, trim, nulls, q, n, slots, mask, ahead_key, ahead_slot, ahead_long);
    for (; r < n; r++) {
        int64_t a = lo[r], m = (int64_t)hi[r] - trim - a;
        int is_long = ahead_long[r % AHEAD];
        uint64_t key = ahead_key[r % AHEAD], i = ahead_slot[r % AHEAD];
        if (r + AHEAD < n)
            stage(data, len, lo, hi, trim, nulls, r + AHEAD, n, slots, mask, ahead_key, ahead_slot, ahead_long);
        if (nulls ? nulls[r] : m == 0) {
            codes[r] = 0;
            if (tally.train && tally.train[r]) tally.counts[0]++;
            continue;
        }
        if (a < 0 || m < 0 || a + m > len) { bad = 1; break; }
        uint64_t flag = is_long ? LONG_TOKEN : 0;
        for (int64_t steps = 0;; steps++) {
            if (steps > pairs) { bad = 2; goto full; } /* no empty slot: slots and state disagree */
            uint64_t meta = slots[2 * i + 1];
            if (!meta) {
                if (size + 1 > room || size + 2 > n_offsets || used + m > arena_len ||
                    (tally.train && size + 1 >= tally.n_counts))
                    goto full;
                memcpy(arena + used, data + a, m);
                offsets[size] = used;
                used += m;
                size++;
                offsets[size] = used;
                slots[2 * i] = key;
                slots[2 * i + 1] = flag | (uint64_t)size;
                break;
            }
            if (slots[2 * i] == key && (meta & LONG_TOKEN) == flag) {
                uint64_t code = meta & CODE_BITS;
                if (!is_long || (offsets[code] - offsets[code - 1] == m &&
                                 !memcmp(arena + offsets[code - 1], data + a, m)))
                    break;
            }
            i = (i + 1) & mask;
        }
        codes[r] = (uint32_t)(slots[2 * i + 1] & CODE_BITS);
        if (tally.train && tally.train[r]) count_in_slot(&slots[2 * i + 1], tally.counts);
    }
full:
    state[0] = size;
    state[1] = used;
    Py_END_ALLOW_THREADS
    release(b, 11);
    if (bad) {
        PyErr_Format(PyExc_ValueError, bad == 2 ? "row %lld: the table's slots are full" :
                     "row %lld: token outside data", (long long)r);
        return NULL;
    }
    return PyLong_FromSsize_t(r);
}

/* code_ints(values, nulls, first, slots, state, keys, codes, train, counts) -> row reached */
static PyObject *code_ints(PyObject *self, PyObject *args) {
    PyObject *o_values, *o_nulls, *o_slots, *o_state, *o_keys, *o_codes, *o_train, *o_counts;
    Py_ssize_t first;
    if (!PyArg_ParseTuple(args, "OOnOOOOOO", &o_values, &o_nulls, &first, &o_slots, &o_state, &o_keys, &o_codes,
                          &o_train, &o_counts))
        return NULL;
    Buf b[8];
    memset(b, 0, sizeof b);
    Tally tally;
    if (!get_buf(o_codes, &b[5], 1, 4, 0, "codes")) { release(b, 8); return NULL; }
    Py_ssize_t n = ITEMS(b[5], 4);
    if (!get_buf(o_values, &b[0], 0, 8, n, "values") || !get_buf(o_nulls, &b[1], 0, 1, 0, "nulls") ||
        !get_buf(o_slots, &b[2], 1, 8, 2, "slots") || !get_buf(o_state, &b[3], 1, 8, 1, "state") ||
        !get_buf(o_keys, &b[4], 1, 8, 0, "keys") || !get_tally(o_train, o_counts, &b[6], n, &tally)) {
        release(b, 8);
        return NULL;
    }
    if (b[1].view.len && b[1].view.len < n) {
        release(b, 8);
        PyErr_SetString(PyExc_ValueError, "nulls: one per row, or none");
        return NULL;
    }
    if (tally.train && tally.n_counts <= ((int64_t *)b[3].view.buf)[0]) {
        release(b, 8);
        PyErr_SetString(PyExc_ValueError, "counts: shorter than the table's codes");
        return NULL;
    }
    const int64_t *values = b[0].view.buf;
    const uint8_t *nulls = b[1].view.len ? b[1].view.buf : NULL;
    uint64_t *slots = b[2].view.buf;
    int64_t *state = b[3].view.buf, *keys = b[4].view.buf;
    uint32_t *codes = b[5].view.buf;
    int64_t pairs = ITEMS(b[2], 8) / 2, room = capacity(pairs), n_keys = ITEMS(b[4], 8);
    uint64_t mask = (uint64_t)pairs - 1;
    int64_t r = first, bad = 0;
    if (!slots_ok(pairs)) {
        release(b, 8);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    int64_t size = state[0];
    for (; r < n; r++) {
        if (nulls && nulls[r]) {
            codes[r] = 0;
            if (tally.train && tally.train[r]) tally.counts[0]++;
            continue;
        }
        uint64_t key = (uint64_t)values[r], i = int_slot(key) & mask;
        for (int64_t steps = 0;; steps++) {
            if (steps > pairs) { bad = 2; goto full; } /* no empty slot: slots and state disagree */
            uint64_t meta = slots[2 * i + 1];
            if (!meta) {
                if (size + 1 > room || size + 1 > n_keys || (tally.train && size + 1 >= tally.n_counts)) goto full;
                keys[size++] = values[r];
                slots[2 * i] = key;
                slots[2 * i + 1] = (uint64_t)size;
                break;
            }
            if (slots[2 * i] == key) break;
            i = (i + 1) & mask;
        }
        codes[r] = (uint32_t)(slots[2 * i + 1] & CODE_BITS);
        if (tally.train && tally.train[r]) count_in_slot(&slots[2 * i + 1], tally.counts);
    }
full:
    state[0] = size;
    Py_END_ALLOW_THREADS
    release(b, 8);
    if (bad) {
        PyErr_Format(PyExc_ValueError, "row %lld: the table's slots are full", (long long)r);
        return NULL;
    }
    return PyLong_FromSsize_t(r);
}

/* rehash(old, new, text): every pair of `old` into the larger, empty `new` (`text`: a text table) */
static PyObject *rehash(PyObject *self, PyObject *args) {
    PyObject *o_old, *o_new;
    int text;
    if (!PyArg_ParseTuple(args, "OOp", &o_old, &o_new, &text)) return NULL;
    Buf b[2];
    memset(b, 0, sizeof b);
    if (!get_buf(o_old, &b[0], 0, 8, 2, "old") || !get_buf(o_new, &b[1], 1, 8, 2, "new")) {
        release(b, 2);
        return NULL;
    }
    const uint64_t *old = b[0].view.buf;
    uint64_t *new = b[1].view.buf;
    int64_t old_pairs = ITEMS(b[0], 8) / 2, new_pairs = ITEMS(b[1], 8) / 2, entries = 0, taken = 0;
    uint64_t mask = (uint64_t)new_pairs - 1;
    for (int64_t s = 0; s < old_pairs; s++) entries += old[2 * s + 1] != 0;
    for (int64_t s = 0; s < new_pairs; s++) taken += new[2 * s + 1] != 0;
    if (!slots_ok(new_pairs) || entries >= new_pairs || taken) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "rehash: `new` must be empty and larger");
        release(b, 2);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (int64_t s = 0; s < old_pairs; s++) {
        uint64_t key = old[2 * s], meta = old[2 * s + 1];
        if (!meta) continue;
        uint64_t i = (text ? text_slot(key, (meta & LONG_TOKEN) != 0) : int_slot(key)) & mask;
        while (new[2 * i + 1]) i = (i + 1) & mask;
        new[2 * i] = key;
        new[2 * i + 1] = meta;
    }
    Py_END_ALLOW_THREADS
    release(b, 2);
    Py_RETURN_NONE;
}

/* slot_counts(slots, counts): counts[code] += the train count held in each code's slot */
static PyObject *slot_counts(PyObject *self, PyObject *args) {
    PyObject *o_slots, *o_counts;
    if (!PyArg_ParseTuple(args, "OO", &o_slots, &o_counts)) return NULL;
    Buf b[2];
    memset(b, 0, sizeof b);
    if (!get_buf(o_slots, &b[0], 0, 8, 2, "slots") || !get_buf(o_counts, &b[1], 1, 8, 0, "counts")) {
        release(b, 2);
        return NULL;
    }
    const uint64_t *slots = b[0].view.buf;
    int64_t *counts = b[1].view.buf, pairs = ITEMS(b[0], 8) / 2, n_counts = ITEMS(b[1], 8), bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (int64_t s = 0; s < pairs; s++) {
        uint64_t meta = slots[2 * s + 1], code = meta & CODE_BITS;
        if (!meta) continue;
        if ((int64_t)code >= n_counts) { bad = 1; break; }
        counts[code] += (int64_t)(meta >> 32);
    }
    Py_END_ALLOW_THREADS
    release(b, 2);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "counts: shorter than the table's codes");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* count_codes(codes, train, counts, skip_missing): counts[code] += 1 per train row */
static PyObject *count_codes(PyObject *self, PyObject *args) {
    PyObject *o_codes, *o_train, *o_counts;
    int skip_missing;
    if (!PyArg_ParseTuple(args, "OOOp", &o_codes, &o_train, &o_counts, &skip_missing)) return NULL;
    Buf b[3];
    memset(b, 0, sizeof b);
    if (!get_buf(o_codes, &b[0], 0, 4, 0, "codes")) { release(b, 3); return NULL; }
    Py_ssize_t n = ITEMS(b[0], 4);
    if (!get_buf(o_train, &b[1], 0, 1, n, "train") || !get_buf(o_counts, &b[2], 1, 8, 0, "counts")) {
        release(b, 3);
        return NULL;
    }
    const uint32_t *codes = b[0].view.buf;
    const uint8_t *train = b[1].view.buf;
    int64_t *counts = b[2].view.buf, n_counts = ITEMS(b[2], 8), bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < n; r++) {
        uint32_t c = codes[r];
        if (!train[r] || (skip_missing && !c)) continue;
        if (c >= n_counts) { bad = 1; break; }
        counts[c]++;
    }
    Py_END_ALLOW_THREADS
    release(b, 3);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "counts: a code beyond the array");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* gather_ids(narrow, wide, column_at, tables, table_at, split, want, out) -> rows written:
 * out[row, c] = tables[table_at[c] + code] for the rows r whose split is `want`, where column c's code
 * is narrow[k, r] (uint16) for column_at[c] = -k - 1, or wide[k, r] (uint32) for column_at[c] = k */
static PyObject *gather_ids(PyObject *self, PyObject *args) {
    PyObject *o_narrow, *o_wide, *o_column_at, *o_tables, *o_at, *o_split, *o_out;
    int want;
    if (!PyArg_ParseTuple(args, "OOOOOOiO", &o_narrow, &o_wide, &o_column_at, &o_tables, &o_at, &o_split, &want,
                          &o_out))
        return NULL;
    Buf b[7];
    memset(b, 0, sizeof b);
    if (!get_buf(o_split, &b[5], 0, 1, 0, "split") || !get_buf(o_at, &b[4], 0, 8, 0, "table_at")) {
        release(b, 7);
        return NULL;
    }
    Py_ssize_t n = b[5].view.len, width = ITEMS(b[4], 8);
    if (!get_buf(o_narrow, &b[0], 0, 2, 0, "narrow") || !get_buf(o_wide, &b[1], 0, 4, 0, "wide") ||
        !get_buf(o_column_at, &b[2], 0, 8, width, "column_at") || !get_buf(o_tables, &b[3], 0, 4, 0, "tables") ||
        !get_buf(o_out, &b[6], 1, 4, 0, "out")) {
        release(b, 7);
        return NULL;
    }
    const uint16_t *narrow = b[0].view.buf;
    const uint32_t *wide = b[1].view.buf;
    const int64_t *column_at = b[2].view.buf, *at = b[4].view.buf;
    const int32_t *tables = b[3].view.buf;
    const uint8_t *split = b[5].view.buf;
    int32_t *out = b[6].view.buf;
    int64_t n_narrow = ITEMS(b[0], 2), n_wide = ITEMS(b[1], 4), n_tables = ITEMS(b[3], 4);
    int64_t n_out = ITEMS(b[6], 4) / (width ? width : 1), row = 0, bad = 0;
    for (Py_ssize_t c = 0; c < width; c++) { /* every column's codes inside its block */
        int64_t k = column_at[c];
        if (k >= 0 ? (k + 1) * n > n_wide : (-k) * n > n_narrow) bad = 1;
    }
    /* Per block, its columns' output position and table start: two branch-free loops per row. */
    int64_t *plan = PyMem_Malloc(sizeof(int64_t) * 4 * (width ? width : 1)), n_n = 0, n_w = 0;
    if (!plan) {
        release(b, 7);
        return PyErr_NoMemory();
    }
    int64_t *n_col = plan, *n_at = plan + width, *w_col = plan + 2 * width, *w_at = plan + 3 * width;
    for (Py_ssize_t c = 0; c < width && !bad; c++) {
        int64_t k = column_at[c];
        if (k >= 0) { w_col[k] = c; w_at[k] = at[c]; n_w = k + 1 > n_w ? k + 1 : n_w; }
        else { n_col[-k - 1] = c; n_at[-k - 1] = at[c]; n_n = -k > n_n ? -k : n_n; }
    }
    if (n_n + n_w != width) bad = 1; /* column_at: each block's columns 0.. once */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < n && !bad; r++) {
        if (split[r] != want) continue;
        if (row >= n_out) { bad = 1; break; }
        int32_t *dst = out + row * width;
        for (int64_t k = 0; k < n_n; k++) {
            int64_t t = n_at[k] + narrow[k * n + r];
            if (t >= n_tables) { bad = 1; break; }
            dst[n_col[k]] = tables[t];
        }
        for (int64_t k = 0; k < n_w; k++) {
            int64_t t = w_at[k] + wide[k * n + r];
            if (t >= n_tables) { bad = 1; break; }
            dst[w_col[k]] = tables[t];
        }
        row++;
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(plan);
    release(b, 7);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "gather_ids: a code beyond its table or block, or too few output rows");
        return NULL;
    }
    return PyLong_FromLongLong(row);
}

/* joined(arena, offsets, first, size, out): tokens first..size-1, each followed by a newline */
static PyObject *joined(PyObject *self, PyObject *args) {
    PyObject *o_arena, *o_offsets, *o_out;
    Py_ssize_t first, size;
    if (!PyArg_ParseTuple(args, "OOnnO", &o_arena, &o_offsets, &first, &size, &o_out)) return NULL;
    Buf b[3];
    memset(b, 0, sizeof b);
    if (!get_buf(o_offsets, &b[1], 0, 8, size + 1, "offsets")) { release(b, 3); return NULL; }
    const int64_t *offsets = b[1].view.buf;
    if (first < 0 || first > size || !get_buf(o_arena, &b[0], 0, 1, offsets[size], "arena") ||
        !get_buf(o_out, &b[2], 1, 1, offsets[size] - offsets[first] + size - first, "out")) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "joined: bad range");
        release(b, 3);
        return NULL;
    }
    const uint8_t *arena = b[0].view.buf;
    uint8_t *out = b[2].view.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t g = first; g < size; g++) {
        int64_t m = offsets[g + 1] - offsets[g];
        memcpy(out, arena + offsets[g], m);
        out[m] = '\n';
        out += m + 1;
    }
    Py_END_ALLOW_THREADS
    release(b, 3);
    Py_RETURN_NONE;
}

/* plain_integers(arena, offsets, first, size, digits, values, plain): tokens first..size-1 of the form
 * -?[0-9]{1,digits} as float64 in `values` (exact up to 15 digits), plain[g - first] = 1 for those */
static PyObject *plain_integers(PyObject *self, PyObject *args) {
    PyObject *o_arena, *o_offsets, *o_values, *o_plain;
    Py_ssize_t first, size;
    int digits;
    if (!PyArg_ParseTuple(args, "OOnniOO", &o_arena, &o_offsets, &first, &size, &digits, &o_values, &o_plain))
        return NULL;
    Buf b[4];
    memset(b, 0, sizeof b);
    if (first < 0 || first > size || digits > 18 || !get_buf(o_offsets, &b[1], 0, 8, size + 1, "offsets") ||
        !get_buf(o_arena, &b[0], 0, 1, ((int64_t *)b[1].view.buf)[size], "arena") ||
        !get_buf(o_values, &b[2], 1, 8, size - first, "values") ||
        !get_buf(o_plain, &b[3], 1, 1, size - first, "plain")) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "plain_integers: bad range");
        release(b, 4);
        return NULL;
    }
    const uint8_t *arena = b[0].view.buf;
    const int64_t *offsets = b[1].view.buf;
    double *values = b[2].view.buf;
    uint8_t *plain = b[3].view.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t g = first; g < size; g++) {
        int64_t a = offsets[g], e = offsets[g + 1];
        int negative = e > a && arena[a] == '-';
        a += negative;
        int ok = e - a >= 1 && e - a <= digits;
        int64_t v = 0;
        for (int64_t i = a; ok && i < e; i++) {
            unsigned d = (unsigned)arena[i] - '0';
            if (d > 9) ok = 0;
            else v = v * 10 + d;
        }
        values[g - first] = ok ? (double)(negative ? -v : v) : 0.0;
        plain[g - first] = (uint8_t)ok;
    }
    Py_END_ALLOW_THREADS
    release(b, 4);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"split_fields", split_fields, METH_VARARGS, "Field starts of whole lines (see kernels.pyi)."},
    {"binary_labels", binary_labels, METH_VARARGS, "Labels that are exactly 0 or 1."},
    {"code_text", code_text, METH_VARARGS, "Code text tokens through a field's table."},
    {"code_ints", code_ints, METH_VARARGS, "Code integer tokens through a field's table."},
    {"rehash", rehash, METH_VARARGS, "Move a table's pairs into a larger one."},
    {"slot_counts", slot_counts, METH_VARARGS, "Add the train counts held in a table's slots."},
    {"count_codes", count_codes, METH_VARARGS, "Count the train rows' codes."},
    {"gather_ids", gather_ids, METH_VARARGS, "Codes to ids, the rows of one split."},
    {"joined", joined, METH_VARARGS, "Tokens of an arena, newline after each."},
    {"plain_integers", plain_integers, METH_VARARGS, "Tokens that are plain integers, as float64."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) {
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "ttsrec.data._kernels needs a little-endian machine");
        return NULL;
    }
    return PyModule_Create(&module);
}
