/* Whether a value is shaped like a per-run id (never a label), shared by the C accelerators
 * that read agent names: the test of plugins._agentdialects.classify.looks_like_run_id.
 *
 * UUID-shaped (bare or behind a prefix of [A-Za-z_-]), 16 hex digits or more, or a ULID (26 of
 * Crockford's base32, upper case), 16 characters at least. Only ASCII matches (a non-ASCII
 * byte is a character the patterns never hold, also once replaced by U+FFFD), so bytes count
 * as characters. The twin test (tests/plugins/test_workflow_agent.py) compares it with the
 * Python rule on random and hostile strings. */
#ifndef PLUGINS_NATIVE_RUNID_H
#define PLUGINS_NATIVE_RUNID_H

#include <Python.h>
#include <stdint.h>

static inline int
runid_is_hex(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static inline int
runid_is_prefix_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-';
}

/* whether p[at:n] is exactly H{8}-?H{4}-?H{4}-?H{4}-?H{12} (the dashes optional: a hex digit
 * is no dash, so the reading is unique) */
static inline int
runid_uuid_tail(const uint8_t *p, Py_ssize_t n, Py_ssize_t at)
{
    static const int groups[5] = {8, 4, 4, 4, 12};
    Py_ssize_t i = at;
    for (int g = 0; g < 5; g++) {
        if (g && i < n && p[i] == '-')
            i++;
        for (int k = 0; k < groups[g]; k++, i++)
            if (i >= n || !runid_is_hex(p[i]))
                return 0;
    }
    return i == n;
}

static inline int
runid_shaped(const uint8_t *p, Py_ssize_t n)
{
    if (n < 16)
        return 0;
    int hex = 1, ulid = n == 26;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 0x80)
            return 0;
        if (!runid_is_hex(c))
            hex = 0;
        if (!((c >= '0' && c <= '9') ||
              (c >= 'A' && c <= 'Z' && c != 'I' && c != 'L' && c != 'O' && c != 'U')))
            ulid = 0;
    }
    if (hex || ulid)
        return 1;
    /* a UUID (32 to 36 characters) at the end, behind [A-Za-z_-]* */
    Py_ssize_t prefix = 0;
    while (prefix < n && runid_is_prefix_char(p[prefix]))
        prefix++;
    for (Py_ssize_t at = n - 36 > 0 ? n - 36 : 0; at <= n - 32 && at <= prefix; at++)
        if (runid_uuid_tail(p, n, at))
            return 1;
    return 0;
}

#endif
