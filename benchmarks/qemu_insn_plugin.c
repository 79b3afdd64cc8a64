/* A QEMU TCG plugin (QEMU >= 7.2, built with plugin support, as Debian's is): how many times
 * each guest instruction ran, written at exit as "address count" lines to out=<file>. Used by
 * benchmarks/mcu_cores.py --where to attribute a kernel's instructions to its functions and
 * loops. QEMU installs no plugin header on Debian, so the few API calls used are declared here
 * as QEMU 7.2's include/qemu/qemu-plugin.h declares them (plugin API version 1). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*udata_cb)(qemu_plugin_id_t, void *);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, enum qemu_plugin_op,
                                              void *, uint64_t);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, udata_cb, void *);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* One translated block: its instructions' addresses and how often it ran (an inline add). */
typedef struct block {
    struct block *next;
    uint64_t count;
    size_t n;
    uint64_t addr[];
} block_t;

static block_t *blocks;
static char out[1024] = "insn-counts.txt";

static void translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    block_t *b = calloc(1, sizeof(block_t) + n * sizeof(uint64_t));
    if (!b) return;
    b->n = n;
    for (size_t i = 0; i < n; i++)
        b->addr[i] = qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, i));
    b->next = blocks;
    blocks = b;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->count, 1);
}

static void finished(qemu_plugin_id_t id, void *unused) {
    (void)id, (void)unused;
    FILE *f = fopen(out, "w");
    if (!f) return;
    for (block_t *b = blocks; b; b = b->next)
        for (size_t i = 0; b->count && i < b->n; i++)
            fprintf(f, "%llx %llu\n", (unsigned long long)b->addr[i],
                    (unsigned long long)b->count);
    fclose(f);
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++)
        if (!strncmp(argv[i], "out=", 4)) snprintf(out, sizeof out, "%s", argv[i] + 4);
    qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
    qemu_plugin_register_atexit_cb(id, finished, NULL);
    return 0;
}
