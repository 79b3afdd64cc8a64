/* mps2-an385 board support: CMSDK APB UART0 received by interrupt into a ring buffer (a polling
 * receiver starves QEMU), SysTick as a 64-bit tick counter, reset through AIRCR and exit through
 * semihosting. */
#include "../../ek_board.h"

#define REG(a) (*(volatile uint32_t *)(a))
#define UART0 0x40004000u
#define UART_DATA REG(UART0 + 0x00)
#define UART_STATE REG(UART0 + 0x04)
#define UART_CTRL REG(UART0 + 0x08)
#define UART_INTCLEAR REG(UART0 + 0x0C)
#define UART_BAUDDIV REG(UART0 + 0x10)
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define NVIC_ISER0 REG(0xE000E100u)
#define SCB_AIRCR REG(0xE000ED0Cu)
#define SYSCLK_HZ 25000000u
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
    NVIC_ISER0 = 1u;           /* UART0 RX is IRQ 0 */
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
