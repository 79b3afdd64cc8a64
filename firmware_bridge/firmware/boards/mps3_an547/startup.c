/* mps3-an547: the MPS2 startup with this board's UART receive interrupt (IRQ 33 or 34, see board.c). */
#define EK_UART_RX_IRQ 33
#define EK_UART_RX_IRQ2 34
#include "../mps2/startup.c"
