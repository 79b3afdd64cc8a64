/* edgekit's frame protocol (the firmware side of firmware_bridge/protocol.py):
 *   A5 5A | type | seq | length (u16 LE) | CRC-8 of type..length | payload | CRC-32 (LE) of
 *   type..payload.
 * A reply carries the request's seq and type | 0x80; errors are type 0x7F. */
#ifndef EK_PROTOCOL_H
#define EK_PROTOCOL_H
#include <stdint.h>

#include "model.h"  /* EK_MAX_PAYLOAD and EK_N_STEPS: the buffers are sized for this model */

#define EK_PROTOCOL_VERSION 2  /* 2: STATS */
#define EK_INTER_BYTE_TIMEOUT_MS 50

enum {
    EK_HELLO = 0x01, EK_PING = 0x02, EK_INFER = 0x03, EK_INFER_LAYERS = 0x04, EK_RESET = 0x05,
    EK_SHUTDOWN = 0x06, EK_STATS = 0x07, EK_REPLY = 0x80, EK_ERROR = 0x7F,
};
enum { EK_ERR_CRC = 1, EK_ERR_LENGTH = 2, EK_ERR_TYPE = 3, EK_ERR_SIZE = 4, EK_ERR_STEP = 5 };

uint8_t ek_crc8(const uint8_t *data, uint32_t n);
uint32_t ek_crc32(uint32_t crc, const uint8_t *data, uint32_t n);
void ek_serve(void);  /* say HELLO, then answer requests forever */
#endif
