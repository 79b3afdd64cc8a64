/* mps3-an547 (Cortex-M55, SSE-300) board support: the MPS2 port's CMSDK UART, SysTick, reset and
 * exit, at this board's addresses (QEMU hw/arm/mps2-tz.c, AN547): UART0 at 0x49303000 (its
 * receive interrupt is IRQ 33 in QEMU 7.2, 34 from QEMU 9.2, which swapped RX and TX: both
 * are enabled and handled), SysTick on the 32 MHz system clock. The core starts in Secure
 * state with the SAU off, so every address is Secure and the peripherals answer at these
 * (Non-secure alias) addresses too. */
#define EK_UART0 0x49303000u
#define EK_UART_RX_IRQ 33
#define EK_UART_RX_IRQ2 34
#define EK_SYSCLK_HZ 32000000u
#include "../mps2/board.c"
