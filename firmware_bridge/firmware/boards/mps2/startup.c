/* Cortex-M startup for QEMU's MPS2 boards (and, through boards/mps3_an547, the MPS3 AN547): the
 * vector table, the FPU (and Helium) switched on where the core has one, .data/.bss set-up,
 * main. */
#include <stdint.h>

#ifndef EK_UART_RX_IRQ
#define EK_UART_RX_IRQ 0
#define EK_UART_RX_IRQ2 0
#endif
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);
void uart0_rx_handler(void);
void systick_handler(void);

/* Separate from reset_handler and never inlined: the compiler may vectorize these loops (MVE on
 * a Cortex-M55), which must not run before the coprocessors are on. */
__attribute__((noinline)) static void init_memory(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
}

void reset_handler(void) {
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    SCB_CPACR |= 0xFu << 20;  /* CP10 and CP11 (the FPU, and MVE on v8.1-M): full access */
    __asm volatile("dsb\n\tisb" ::: "memory");
#endif
    init_memory();
    main();
    for (;;) {}
}

static void fault_handler(void) { for (;;) {} }

__attribute__((section(".isr_vector"), used))
static void (*const vectors[16 + EK_UART_RX_IRQ2 + 1])(void) = {
    [0] = (void (*)(void))&_estack, [1] = reset_handler,
    [2] = fault_handler, [3] = fault_handler, [4] = fault_handler,  /* NMI, HardFault, MemManage */
    [5] = fault_handler, [6] = fault_handler, [7] = fault_handler,  /* BusFault, Usage, Secure */
    [11] = fault_handler, [12] = fault_handler, [14] = fault_handler,  /* SVC, Debug, PendSV */
    [15] = systick_handler,
    [16 + EK_UART_RX_IRQ] = uart0_rx_handler,
#if EK_UART_RX_IRQ2 != EK_UART_RX_IRQ
    [16 + EK_UART_RX_IRQ2] = uart0_rx_handler,
#endif
};
