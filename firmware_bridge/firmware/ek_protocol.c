/* The frame protocol server: the parser (hunts for the sync bytes, checks the header CRC before
 * trusting a length, resumes one byte after any frame that fails a check, drops a frame whose
 * bytes stop arriving for EK_INTER_BYTE_TIMEOUT_MS) and the command handlers. */
#include <string.h>

#include "ek_anytime.h"
#include "ek_board.h"
#include "ek_model.h"
#include "ek_protocol.h"
#include "ek_train.h"

#define EK_FIRMWARE_VERSION "edgekit-fw 0.1"

static uint8_t rx[7 + EK_MAX_PAYLOAD + 4];
static uint8_t tx[EK_MAX_PAYLOAD];
static uint32_t step_ticks[EK_N_STEPS];

uint8_t ek_crc8(const uint8_t *data, uint32_t n) {  /* polynomial 0x07 */
    uint8_t crc = 0;
    while (n--) {
        crc ^= *data++;
        for (int i = 0; i < 8; i++) crc = (uint8_t)(crc & 0x80 ? (crc << 1) ^ 0x07 : crc << 1);
    }
    return crc;
}

uint32_t ek_crc32(uint32_t crc, const uint8_t *data, uint32_t n) {  /* zlib's CRC-32 */
    crc = ~crc;
    while (n--) {
        crc ^= *data++;
        for (int i = 0; i < 8; i++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, v); put16(p + 2, v >> 16); }
static uint32_t get16(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8; }
static uint32_t get32(const uint8_t *p) { return get16(p) | get16(p + 2) << 16; }

static void send(uint8_t type, uint8_t seq, const uint8_t *payload, uint32_t n) {
    uint8_t head[7] = {0xA5, 0x5A, type, seq, 0, 0, 0}, tail[4];
    put16(head + 4, n);
    head[6] = ek_crc8(head + 2, 4);
    put32(tail, ek_crc32(ek_crc32(0, head + 2, 4), payload, n));
    board_write(head, 7);
    board_write(payload, n);
    board_write(tail, 4);
}

static void send_error(uint8_t seq, uint8_t code, const char *why) {
    uint32_t n = (uint32_t)strlen(why);
    if (n > EK_MAX_PAYLOAD - 1) n = EK_MAX_PAYLOAD - 1;  /* a frame (the host drops longer) */
    tx[0] = code;
    memcpy(tx + 1, why, n);
    send(EK_ERROR, seq, tx, n + 1);
}

static uint32_t io_bytes(const ek_span_t *spans, uint16_t n) {
    uint32_t total = 0;
    for (uint16_t i = 0; i < n; i++) total += spans[i].size;
    return total;
}

static void hello(uint8_t type, uint8_t seq) {
    put16(tx, EK_PROTOCOL_VERSION);
    put16(tx + 2, EK_MAX_PAYLOAD);
    put32(tx + 4, ek_model.arena_bytes);
    put32(tx + 8, board_tick_hz());
    put32(tx + 12, io_bytes(ek_model.inputs, ek_model.n_inputs));
    put32(tx + 16, io_bytes(ek_model.outputs, ek_model.n_outputs));
    put16(tx + 20, ek_model.n_steps);
    memcpy(tx + 22, ek_model.hash, 16);
    memcpy(tx + 38, EK_FIRMWARE_VERSION, sizeof EK_FIRMWARE_VERSION - 1);
    send(type, seq, tx, 38 + sizeof EK_FIRMWARE_VERSION - 1);
}

/* The step whose output the arena holds (n_steps - 1 after INFER: the outputs too), or -1:
 * what READ may read. A run, a LOAD or a reboot ends it. */
static int32_t held = -1;

/* CRC-32 of the tensors ``spans`` lays out in the arena, one after the other. */
static uint32_t spans_crc(const ek_span_t *spans, uint16_t count) {
    uint32_t crc = 0;
    for (uint16_t i = 0; i < count; i++)
        crc = ek_crc32(crc, (const uint8_t *)ek_model.arena + spans[i].offset, spans[i].size);
    return crc;
}

/* Copy ``n`` bytes at ``offset`` of the byte stream the tensors ``spans`` make, one after the
 * other, into the arena from ``buf`` (LOAD) or out of it into ``buf`` (READ). */
static void stream_copy(const ek_span_t *spans, uint16_t count, uint32_t offset, uint8_t *buf,
                        uint32_t n, int into_arena) {
    for (uint16_t i = 0; i < count && n; i++) {
        if (offset >= spans[i].size) { offset -= spans[i].size; continue; }
        uint32_t k = spans[i].size - offset < n ? spans[i].size - offset : n;
        uint8_t *at = (uint8_t *)ek_model.arena + spans[i].offset + offset;
        if (into_arena) memcpy(at, buf, k); else memcpy(buf, at, k);
        buf += k;
        n -= k;
        offset = 0;
    }
}

/* The inputs of a computing request: all of them (copied into the arena), or the CRC-32 of
 * what LOAD wrote there, checked; false (after an error frame) when neither holds. */
static int take_inputs(uint8_t seq, uint8_t *data, uint32_t n) {
    uint32_t size = io_bytes(ek_model.inputs, ek_model.n_inputs);
    if (n == size) {
        stream_copy(ek_model.inputs, ek_model.n_inputs, 0, data, n, 1);
    } else if (n != 4) {
        send_error(seq, EK_ERR_SIZE, "input size differs from the model's");
        return 0;
    } else if (spans_crc(ek_model.inputs, ek_model.n_inputs) != get32(data)) {
        send_error(seq, EK_ERR_STATE, "the loaded input is incomplete: LOAD it again");
        return 0;
    }
    send(EK_ACK, seq, 0, 0);  /* accepted: the host now waits for the computation */
    held = -1;
    return 1;
}

/* ``p`` (whose bytes before it are in tx) followed by a tensor: the tensor itself when the
 * reply still fits one frame, else its CRC-32 (the host READs it in chunks); the reply's end. */
static uint8_t *put_result(uint8_t *p, const ek_span_t *spans, uint16_t count) {
    uint32_t size = io_bytes(spans, count);
    if ((uint32_t)(p - tx) + size <= EK_MAX_PAYLOAD) {
        stream_copy(spans, count, 0, p, size, 0);
        return p + size;
    }
    put32(p, spans_crc(spans, count));
    return p + 4;
}

/* Run ``count`` steps (``steps[0..count)``, or 0 .. count - 1 without a list), each timed from
 * ``start``, and reply ``type``: u32 total ticks, u32 ticks per step run, then the outputs (or
 * their CRC-32). */
static void run_and_reply(uint8_t type, uint8_t seq, uint64_t start, const uint16_t *steps,
                          uint16_t count) {
    uint64_t last = start;
    for (uint16_t s = 0; s < count; s++) {
        ek_model.run_step(steps ? steps[s] : s);
        uint64_t now = board_ticks();
        step_ticks[s] = (uint32_t)(now - last);
        last = now;
    }
    held = ek_model.n_steps - 1;
    put32(tx, (uint32_t)(last - start));
    uint8_t *p = tx + 4;
    for (uint16_t s = 0; s < count; s++, p += 4) put32(p, step_ticks[s]);
    p = put_result(p, ek_model.outputs, ek_model.n_outputs);
    send(type, seq, tx, (uint32_t)(p - tx));
}

/* INFER: the inputs (or the CRC-32 of the loaded ones); reply u32 total ticks, u32 ticks per
 * step, then the outputs (or their CRC-32). */
static void infer(uint8_t seq, uint8_t *data, uint32_t n) {
    if (!take_inputs(seq, data, n)) return;
    run_and_reply(EK_INFER | EK_REPLY, seq, board_ticks(), 0, ek_model.n_steps);
}

/* INFER_PATH: u16 path of an anytime model's table (ek_anytime.h), then as INFER; only that
 * path's steps run (its first step's ticks include pointing its left-out adds at what stands
 * for them); reply as INFER, with the ticks of the path's steps. */
static void infer_path(uint8_t seq, uint8_t *data, uint32_t n) {
    if (n < 2) { send_error(seq, EK_ERR_SIZE, "missing path index"); return; }
    uint16_t path = (uint16_t)get16(data);
    if (path >= ek_paths.n_paths) {
        send_error(seq, EK_ERR_STEP, ek_paths.n_paths ? "no such path"
                                                      : "the model has no sub-network table");
        return;
    }
    if (!take_inputs(seq, data + 2, n - 2)) return;
    uint64_t start = board_ticks();
    ek_paths.use(path);
    run_and_reply(EK_INFER_PATH | EK_REPLY, seq, start, ek_paths.steps + ek_paths.starts[path],
                  (uint16_t)(ek_paths.starts[path + 1] - ek_paths.starts[path]));
    ek_paths.use(ek_paths.full);  /* INFER and INFER_LAYERS run the full schedule */
}

/* INFER_LAYERS: u16 step, then as INFER; reply u16 step, then that step's output (or its
 * CRC-32): the schedule runs up to it, so the planned arena still holds it. */
static void infer_layers(uint8_t seq, uint8_t *data, uint32_t n) {
    if (n < 2) { send_error(seq, EK_ERR_SIZE, "missing step index"); return; }
    uint16_t step = (uint16_t)get16(data);
    if (step >= ek_model.n_steps) { send_error(seq, EK_ERR_STEP, "no such step"); return; }
    if (!take_inputs(seq, data + 2, n - 2)) return;
    for (uint16_t s = 0; s <= step; s++) ek_model.run_step(s);
    held = step;
    put16(tx, step);
    uint8_t *p = put_result(tx + 2, ek_model.steps + step, 1);
    send(EK_INFER_LAYERS | EK_REPLY, seq, tx, (uint32_t)(p - tx));
}

/* LOAD: u32 offset, then bytes of the inputs (laid out as INFER takes them) to put there. */
static void load(uint8_t seq, uint8_t *data, uint32_t n) {
    uint32_t size = io_bytes(ek_model.inputs, ek_model.n_inputs);
    if (n < 4 || get32(data) > size || n - 4 > size - get32(data)) {
        send_error(seq, EK_ERR_RANGE, "LOAD outside the inputs");
        return;
    }
    held = -1;
    stream_copy(ek_model.inputs, ek_model.n_inputs, get32(data), data + 4, n - 4, 1);
    send(EK_LOAD | EK_REPLY, seq, 0, 0);
}

/* READ: u16 what (EK_OUTPUTS, or a step), u32 offset, u16 length; reply those bytes of the
 * outputs after INFER, or of the step's output after INFER_LAYERS ran up to it. */
static void read_result(uint8_t seq, const uint8_t *data, uint32_t n) {
    if (n != 8) { send_error(seq, EK_ERR_SIZE, "READ takes what, offset and length"); return; }
    uint32_t what = get16(data), offset = get32(data + 2), len = get16(data + 6);
    int outputs = what == EK_OUTPUTS;
    if (!outputs && what >= ek_model.n_steps) {
        send_error(seq, EK_ERR_STEP, "no such step");
        return;
    }
    if (held != (outputs ? ek_model.n_steps - 1 : (int32_t)what)) {
        send_error(seq, EK_ERR_STATE, "that result is no longer held: run again");
        return;
    }
    const ek_span_t *spans = outputs ? ek_model.outputs : ek_model.steps + what;
    uint16_t count = outputs ? ek_model.n_outputs : 1;
    uint32_t size = io_bytes(spans, count);
    if (len > EK_MAX_PAYLOAD || offset > size || len > size - offset) {
        send_error(seq, EK_ERR_RANGE, "READ outside the result");
        return;
    }
    stream_copy(spans, count, offset, tx, len, 0);
    send(EK_READ | EK_REPLY, seq, tx, len);
}

#ifdef EK_TRAIN
/* The backbone pass of a training command (ek_train_serve.c): the inputs as INFER takes them,
 * then every step; its ticks, or -1 when the inputs were refused (and answered). */
static int64_t run_backbone(uint8_t seq, uint8_t *data, uint32_t n) {
    if (!take_inputs(seq, data, n)) return -1;
    uint64_t start = board_ticks();
    for (uint16_t s = 0; s < ek_model.n_steps; s++) ek_model.run_step(s);
    held = ek_model.n_steps - 1;
    return (int64_t)(board_ticks() - start);
}

static void train(uint8_t type, uint8_t seq, uint8_t *data, uint32_t n) {
    const char *why = "";
    int32_t len = ek_train_command(type, seq, data, n, tx, run_backbone, &why);
    if (len >= 0) send(type | EK_REPLY, seq, tx, (uint32_t)len);
    else if (len != EK_TRAIN_ANSWERED) send_error(seq, (uint8_t)-len, why);
}
#endif

/* STATS reply: the model's counters of the last inference, u32 each (none for int8 models). */
static void stats(uint8_t seq) {
    for (uint16_t i = 0; i < ek_model.n_stats; i++) put32(tx + 4 * i, ek_model.stats[i]);
    send(EK_STATS | EK_REPLY, seq, tx, 4u * ek_model.n_stats);
}

static void dispatch(uint8_t type, uint8_t seq, uint8_t *payload, uint32_t n) {
    switch (type) {
    case EK_HELLO: hello(EK_HELLO | EK_REPLY, seq); break;
    case EK_PING: send(EK_PING | EK_REPLY, seq, payload, n); break;
    case EK_INFER: infer(seq, payload, n); break;
    case EK_INFER_LAYERS: infer_layers(seq, payload, n); break;
    case EK_INFER_PATH: infer_path(seq, payload, n); break;
#ifdef EK_TRAIN  /* a model with a trainable head: converters/to_c_train.py */
    case EK_TRAIN_CONFIG: case EK_TRAIN_STEP: case EK_TRAIN_READ: case EK_TRAIN_WRITE:
    case EK_TRAIN_INFER: train(type, seq, payload, n); break;
#endif
    case EK_STATS: stats(seq); break;
    case EK_LOAD: load(seq, payload, n); break;
    case EK_READ: read_result(seq, payload, n); break;
    case EK_RESET: send(EK_RESET | EK_REPLY, seq, 0, 0); board_reset(); break;
    case EK_SHUTDOWN: send(EK_SHUTDOWN | EK_REPLY, seq, 0, 0); board_exit(); break;
    default: send_error(seq, EK_ERR_TYPE, "unknown command");
    }
}

static uint32_t now_ms(void) { return (uint32_t)(board_ticks() / (board_tick_hz() / 1000)); }

/* Received bytes not yet consumed: rx[start..end). A frame is parsed from rx[start]; when its
 * header or payload check fails, parsing resumes one byte later over the bytes already held, so
 * a frame that arrived inside a corrupted one (a retry after a dropped byte) is still found. */
static uint32_t start, end;

/* Consume every complete frame (and all garbage) at the front of rx. */
static void parse(void) {
    for (;;) {
        uint8_t *f = rx + start;
        uint32_t n = end - start;
        if (n == 0) {
            start = end = 0;
            return;
        }
        if (f[0] != 0xA5 || (n >= 2 && f[1] != 0x5A)) {  /* not a frame's start */
            start++;
            continue;
        }
        if (n < 7) return;
        uint32_t need = get16(f + 4);
        if (ek_crc8(f + 2, 4) != f[6]) { start++; continue; }
        if (need > EK_MAX_PAYLOAD) {
            send_error(f[3], EK_ERR_LENGTH, "payload longer than the maximum");
            start++;
            continue;
        }
        if (n < 7 + need + 4) return;
        if (ek_crc32(ek_crc32(0, f + 2, 4), f + 7, need) != get32(f + 7 + need)) {
            send_error(f[3], EK_ERR_CRC, "payload CRC mismatch");
            start++;
            continue;
        }
        start += 7 + need + 4;
        dispatch(f[2], f[3], f + 7, need);
    }
}

void ek_serve(void) {
    uint32_t last = 0;
    hello(EK_HELLO, 0);
    for (;;) {
        int c = board_getc();
        if (c < 0) {
            board_idle();
            continue;
        }
        uint32_t now = now_ms();  /* a frame whose bytes stopped coming is abandoned */
        if (end > start && now - last > EK_INTER_BYTE_TIMEOUT_MS) start = end = 0;
        last = now;
        if (end == sizeof rx) {  /* make room: the bytes before start are consumed */
            memmove(rx, rx + start, end - start);
            end -= start;
            start = 0;
        }
        rx[end++] = (uint8_t)c;
        parse();
    }
}
