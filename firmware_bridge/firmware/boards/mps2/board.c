/* MPS2 board support (QEMU's mps2-an385, -an386 and -an500 share this memory and device map):
 * CMSDK APB UART0 received by interrupt into a ring buffer (a polling receiver starves QEMU),
 * SysTick as a 64-bit tick counter, reset through AIRCR and exit through semihosting. A board
 * with the same devices elsewhere (boards/mps3_an547) defines EK_UART0, EK_UART_RX_IRQ,
 * EK_UART_RX_IRQ2 and EK_SYSCLK_HZ and includes this file. */
#include "../../ek_board.h"

#ifndef EK_UART0
#define EK_UART0 0x40004000u  /* CMSDK APB UART0 */
#define EK_UART_RX_IRQ 0      /* its receive interrupt */
#define EK_UART_RX_IRQ2 0     /* a second line that may carry it (mps3_an547) */
#define EK_SYSCLK_HZ 25000000u  /* the FPGA's system clock, which SysTick counts */
#endif

#define REG(a) (*(volatile uint32_t *)(a))
#define UART0 EK_UART0
#define UART_DATA REG(UART0 + 0x00)
#define UART_STATE REG(UART0 + 0x04)
#define UART_CTRL REG(UART0 + 0x08)
#define UART_INTCLEAR REG(UART0 + 0x0C)
#define UART_BAUDDIV REG(UART0 + 0x10)
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define NVIC_ISER(n) REG(0xE000E100u + 4u * (n))
#define SCB_AIRCR REG(0xE000ED0Cu)
#define SYSCLK_HZ EK_SYSCLK_HZ
#define RING 1024u

static volatile uint8_t ring[RING];
static volatile uint32_t head, tail;
static volatile uint32_t wraps;

/* Clear first, then drain: a byte arriving after the drain raises the interrupt again. */
void uart0_rx_handler(void) {
    UART_INTCLEAR = 2u;
    while (UART_STATE & 2u) {
        uint8_t b = (uint8_t)UART_DATA;
        if (head - tail < RING) ring[head++ % RING] = b;
    }
}

void systick_handler(void) { wraps++; }

void board_init(void) {
    UART_BAUDDIV = 16;
    UART_CTRL = 1u | 2u | 8u;  /* TX, RX, RX interrupt */
    NVIC_ISER(EK_UART_RX_IRQ / 32) = 1u << (EK_UART_RX_IRQ % 32);
    NVIC_ISER(EK_UART_RX_IRQ2 / 32) = 1u << (EK_UART_RX_IRQ2 % 32);
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 7u;             /* processor clock, interrupt, enable */
}

int board_getc(void) {
    if (head == tail) return -1;
    return ring[tail++ % RING];
}

void board_write(const uint8_t *data, uint32_t n) {
    while (n--) {
        while (UART_STATE & 1u) {}
        UART_DATA = *data++;
    }
}

uint64_t board_ticks(void) {
    uint32_t w, v;
    do {
        w = wraps;
        v = SYST_CVR;
    } while (w != wraps);
    return ((uint64_t)w << 24) + (0xFFFFFFu - v);
}

uint32_t board_tick_hz(void) { return SYSCLK_HZ; }

void board_idle(void) {
    __asm volatile("cpsid i");
    if (head == tail) __asm volatile("wfi");
    __asm volatile("cpsie i");
}

void board_reset(void) {
    SCB_AIRCR = 0x05FA0004u;
    for (;;) {}
}

void board_exit(void) {
    /* semihosting SYS_EXIT with ADP_Stopped_ApplicationExit */
    register uint32_t r0 __asm("r0") = 0x18, r1 __asm("r1") = 0x20026;
    __asm volatile("bkpt 0xab" : : "r"(r0), "r"(r1) : "memory");
    for (;;) {}
}
