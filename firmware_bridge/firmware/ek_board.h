/* What the firmware needs from a board: a byte link, a tick counter, sleep and reset. Porting
 * edgekit's firmware to another board means implementing these (plus startup and a linker
 * script) in boards/<name>/; nothing else is board-specific. */
#ifndef EK_BOARD_H
#define EK_BOARD_H
#include <stdint.h>

void board_init(void);
int board_getc(void);                 /* next received byte, or -1 when none is waiting */
void board_write(const uint8_t *data, uint32_t n);
uint64_t board_ticks(void);           /* free-running counter at board_tick_hz() */
uint32_t board_tick_hz(void);
void board_idle(void);                /* sleep until an interrupt (a byte, a timer) */
void board_reset(void);               /* reboot; the firmware then says HELLO again */
void board_exit(void);                /* stop for good (an emulator exits; a real board hangs) */
#endif
