/* _recency.h: a bounded recency memory shared by the C accelerators (_tracewire's LateMemory,
 * _agentscan's Memory): key -> value, at most `size` entries, the least recently put dropped
 * first, as an OrderedDict whose keys are moved to the end when put and which is trimmed from
 * the front to `size`. A hash table of node indexes and their hashes (linear probing, deletion by backward
 * shift) over nodes in a doubly linked recency list (oldest first). The memory owns a
 * reference to each key and value. No Python type here: the including module wraps the struct
 * in its own type and passes its key equality (rc_eq: 1 equal, 0 not; it must not fail nor run
 * Python code, so the memory is never changed while it is searched).
 *
 * Static inline functions only (each module that includes it gets its own copy). */

#ifndef RECENCY_H
#define RECENCY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    PyObject *key, *value; /* references; key NULL: a free node */
    Py_hash_t hash;
    Py_ssize_t prev, next; /* -1: none */
} rc_node;

/* a table slot: the node index + 1 (0 empty) and that node's hash, beside it so that a probe
 * compares hashes without reading the node (a lookup that misses, the common one, reads no
 * node at all: one cache line of the table instead of one node per slot probed) */
typedef struct {
    Py_ssize_t index;
    Py_hash_t hash;
} rc_slot;

typedef struct {
    rc_node *nodes;
    Py_ssize_t nodes_cap, used; /* nodes allocated; nodes ever used (free ones are reused) */
    rc_slot *table;             /* (index 0: an empty slot) */
    Py_ssize_t tmask;           /* table size - 1 */
    Py_ssize_t len, size;       /* entries; the most kept */
    Py_ssize_t head, tail, free;
} rc_memory;

typedef int (*rc_eq)(PyObject *a, PyObject *b);

/* an empty memory of at most size entries (below 0: 0): 0, or -1 (MemoryError set) */
static inline int
rc_init(rc_memory *m, Py_ssize_t size)
{
    memset(m, 0, sizeof(*m));
    m->size = size < 0 ? 0 : size;
    m->head = m->tail = m->free = -1;
    m->table = PyMem_Calloc(16, sizeof(rc_slot));
    m->tmask = 15;
    if (m->table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* every entry dropped (the memory stays usable); the references released last */
static inline void
rc_clear(rc_memory *m)
{
    Py_ssize_t x = m->head;
    rc_node *nodes = m->nodes;
    m->head = m->tail = m->free = -1;
    m->len = 0;
    m->used = 0;
    if (m->table != NULL)
        memset(m->table, 0, (size_t)(m->tmask + 1) * sizeof(rc_slot));
    while (x >= 0) {
        Py_ssize_t next = nodes[x].next;
        PyObject *key = nodes[x].key, *value = nodes[x].value;
        nodes[x].key = nodes[x].value = NULL;
        Py_XDECREF(key);
        Py_XDECREF(value);
        x = next;
    }
}

/* the entries dropped and the memory's allocations freed (rc_init again to reuse it) */
static inline void
rc_free(rc_memory *m)
{
    rc_clear(m);
    PyMem_Free(m->nodes);
    PyMem_Free(m->table);
    m->nodes = NULL;
    m->table = NULL;
    m->nodes_cap = 0;
}

/* the table slot of key (with this hash), or -1 */
static inline Py_ssize_t
rc_find(const rc_memory *m, PyObject *key, Py_hash_t hash, rc_eq eq)
{
    Py_ssize_t i = (Py_ssize_t)((size_t)hash & (size_t)m->tmask), k;
    while ((k = m->table[i].index)) {
        if (m->table[i].hash == hash) {
            const rc_node *nd = &m->nodes[k - 1];
            if (nd->key == key || eq(nd->key, key))
                return i;
        }
        i = (i + 1) & m->tmask;
    }
    return -1;
}

/* the node of key, or -1 */
static inline Py_ssize_t
rc_node_of(const rc_memory *m, PyObject *key, Py_hash_t hash, rc_eq eq)
{
    Py_ssize_t at = rc_find(m, key, hash, eq);
    return at < 0 ? -1 : m->table[at].index - 1;
}

static inline void
rc_table_put(rc_slot *table, Py_ssize_t tmask, Py_hash_t hash, Py_ssize_t index)
{
    Py_ssize_t i = (Py_ssize_t)((size_t)hash & (size_t)tmask);
    while (table[i].index)
        i = (i + 1) & tmask;
    table[i].index = index + 1;
    table[i].hash = hash;
}

/* slot i emptied, the entries after it shifted back so that every one stays reachable */
static inline void
rc_table_remove(rc_memory *m, Py_ssize_t i)
{
    Py_ssize_t j = i;
    for (;;) {
        j = (j + 1) & m->tmask;
        if (!m->table[j].index)
            break;
        Py_ssize_t ideal = (Py_ssize_t)((size_t)m->table[j].hash & (size_t)m->tmask);
        /* the entry at j may move to i when its ideal slot is not in (i, j] (cyclically) */
        int stays = i <= j ? (ideal > i && ideal <= j) : (ideal > i || ideal <= j);
        if (!stays) {
            m->table[i] = m->table[j];
            i = j;
        }
    }
    m->table[i].index = 0;
}

static inline void
rc_unlink(rc_memory *m, Py_ssize_t x)
{
    rc_node *nd = &m->nodes[x];
    if (nd->prev >= 0)
        m->nodes[nd->prev].next = nd->next;
    else
        m->head = nd->next;
    if (nd->next >= 0)
        m->nodes[nd->next].prev = nd->prev;
    else
        m->tail = nd->prev;
}

static inline void
rc_link_last(rc_memory *m, Py_ssize_t x)
{
    rc_node *nd = &m->nodes[x];
    nd->prev = m->tail;
    nd->next = -1;
    if (m->tail >= 0)
        m->nodes[m->tail].next = x;
    else
        m->head = x;
    m->tail = x;
}

/* node x becomes the newest */
static inline void
rc_move_to_end(rc_memory *m, Py_ssize_t x)
{
    if (m->tail == x)
        return;
    rc_unlink(m, x);
    rc_link_last(m, x);
}

/* the table doubled (entries put again): 0 or -1 */
static inline int
rc_grow_table(rc_memory *m)
{
    Py_ssize_t tsize = (m->tmask + 1) * 2;
    rc_slot *table = PyMem_Calloc((size_t)tsize, sizeof(rc_slot));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t x = m->head; x >= 0; x = m->nodes[x].next)
        rc_table_put(table, tsize - 1, m->nodes[x].hash, x);
    PyMem_Free(m->table);
    m->table = table;
    m->tmask = tsize - 1;
    return 0;
}

/* the entry in table slot `at` taken out, its key and value handed to the caller (owned) */
static inline void
rc_take(rc_memory *m, Py_ssize_t at, PyObject **key, PyObject **value)
{
    Py_ssize_t x = m->table[at].index - 1;
    rc_node *nd = &m->nodes[x];
    rc_table_remove(m, at);
    rc_unlink(m, x);
    *key = nd->key;
    *value = nd->value;
    nd->key = nd->value = NULL;
    nd->next = m->free;
    m->free = x;
    m->len--;
}

/* the entry in table slot `at` dropped (the references released after the memory is
 * consistent) */
static inline void
rc_delete(rc_memory *m, Py_ssize_t at)
{
    PyObject *key, *value;
    rc_take(m, at, &key, &value);
    Py_DECREF(key);
    Py_DECREF(value);
}

/* the oldest entry's table slot (the memory not empty) */
static inline Py_ssize_t
rc_oldest_slot(const rc_memory *m, rc_eq eq)
{
    const rc_node *nd = &m->nodes[m->head];
    return rc_find(m, nd->key, nd->hash, eq);
}

/* the oldest entry dropped (the memory not empty) */
static inline void
rc_drop_oldest(rc_memory *m, rc_eq eq)
{
    rc_delete(m, rc_oldest_slot(m, eq));
}

/* m[key] = value (key's hash given) as the newest entry, the oldest dropped beyond size
 * (with size 0 nothing is kept): 0 or -1 (MemoryError set) */
static inline int
rc_put(rc_memory *m, PyObject *key, Py_hash_t hash, PyObject *value, rc_eq eq)
{
    Py_ssize_t at = rc_find(m, key, hash, eq);
    if (at >= 0) {
        Py_ssize_t x = m->table[at].index - 1;
        rc_move_to_end(m, x);
        Py_SETREF(m->nodes[x].value, Py_NewRef(value));
        return 0;
    }
    if (m->size <= 0)
        return 0;
    if (m->len >= m->size)
        rc_drop_oldest(m, eq);
    Py_ssize_t x;
    if (m->free >= 0) {
        x = m->free;
        m->free = m->nodes[x].next;
    }
    else {
        if (m->used == m->nodes_cap) {
            Py_ssize_t ncap = m->nodes_cap ? m->nodes_cap * 2 : 64;
            if (ncap > m->size)
                ncap = m->size;
            rc_node *nodes = PyMem_Realloc(m->nodes, (size_t)ncap * sizeof(rc_node));
            if (nodes == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            m->nodes = nodes;
            m->nodes_cap = ncap;
        }
        x = m->used++;
    }
    if ((m->len + 1) * 2 > m->tmask + 1 && rc_grow_table(m) < 0) {
        m->nodes[x].key = NULL;
        m->nodes[x].next = m->free;
        m->free = x;
        return -1;
    }
    rc_node *nd = &m->nodes[x];
    nd->key = Py_NewRef(key);
    nd->value = Py_NewRef(value);
    nd->hash = hash;
    rc_link_last(m, x);
    rc_table_put(m->table, m->tmask, hash, x);
    m->len++;
    return 0;
}

/* the (key, value) pairs (items) or the keys (not items), oldest first, as a new list; NULL
 * on error */
static inline PyObject *
rc_list(const rc_memory *m, int items)
{
    PyObject *out = PyList_New(m->len);
    if (out == NULL)
        return NULL;
    Py_ssize_t i = 0;
    for (Py_ssize_t x = m->head; x >= 0; x = m->nodes[x].next, i++) {
        const rc_node *nd = &m->nodes[x];
        PyObject *item = items ? PyTuple_Pack(2, nd->key, nd->value) : Py_NewRef(nd->key);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

/* the entries, oldest first, as a new list of (key, value) tuples; NULL on error */
static inline PyObject *
rc_items(const rc_memory *m)
{
    return rc_list(m, 1);
}

/* the keys, oldest first, as a new list; NULL on error */
static inline PyObject *
rc_keys(const rc_memory *m)
{
    return rc_list(m, 0);
}

/* an iterator over the keys, oldest first (of a list made now: the memory may change while it
 * is iterated); NULL on error */
static inline PyObject *
rc_iter(const rc_memory *m)
{
    PyObject *keys = rc_keys(m);
    if (keys == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

/* bytes allocated beyond the struct */
static inline size_t
rc_allocated(const rc_memory *m)
{
    return (size_t)m->nodes_cap * sizeof(rc_node) + (size_t)(m->tmask + 1) * sizeof(rc_slot);
}

#endif /* RECENCY_H */
