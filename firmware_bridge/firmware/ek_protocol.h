/* edgekit's frame protocol (the firmware side of firmware_bridge/protocol.py):
 *   A5 5A | type | seq | length (u16 LE) | CRC-8 of type..length | payload | CRC-32 (LE) of
 *   type..payload.
 * A reply carries the request's seq and type | 0x80; errors are type 0x7F. A request that
 * computes (INFER, INFER_LAYERS) is first acknowledged by an ACK frame (type 0x7E, the
 * request's seq), so the host tells a busy board from a silent one. A tensor longer than a
 * frame streams in chunks: LOAD writes the inputs, READ reads an output or a step's output;
 * CRC-32s of the whole tensors tie the chunks to the inference (firmware_bridge/protocol.py). */
#ifndef EK_PROTOCOL_H
#define EK_PROTOCOL_H
#include <stdint.h>

#include "model.h"  /* EK_MAX_PAYLOAD and EK_N_STEPS: the buffers are sized for this model */

#define EK_PROTOCOL_VERSION 3  /* 2: STATS; 3: LOAD/READ stream tensors larger than a frame, ACK */
#define EK_INTER_BYTE_TIMEOUT_MS 50

enum {
    EK_HELLO = 0x01, EK_PING = 0x02, EK_INFER = 0x03, EK_INFER_LAYERS = 0x04, EK_RESET = 0x05,
    EK_SHUTDOWN = 0x06, EK_STATS = 0x07, EK_LOAD = 0x08, EK_READ = 0x09,
    EK_INFER_PATH = 0x0A,  /* an anytime model's path (ek_anytime.h) */
    EK_TRAIN_CONFIG = 0x0B, EK_TRAIN_STEP = 0x0C, EK_TRAIN_READ = 0x0D, EK_TRAIN_WRITE = 0x0E,
    EK_TRAIN_INFER = 0x0F,  /* a model with a trainable head (ek_train.h) */
    EK_REPLY = 0x80,
    EK_ACK = 0x7E, EK_ERROR = 0x7F,
};
enum { EK_ERR_CRC = 1, EK_ERR_LENGTH = 2, EK_ERR_TYPE = 3, EK_ERR_SIZE = 4, EK_ERR_STEP = 5,
       EK_ERR_RANGE = 6, EK_ERR_STATE = 7 };
#define EK_OUTPUTS 0xFFFFu  /* READ's selector of the model's outputs (else a step index) */

uint8_t ek_crc8(const uint8_t *data, uint32_t n);
uint32_t ek_crc32(uint32_t crc, const uint8_t *data, uint32_t n);
void ek_serve(void);  /* say HELLO, then answer requests forever */
#endif
