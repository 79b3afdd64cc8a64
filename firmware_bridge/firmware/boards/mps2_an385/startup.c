/* Cortex-M3 startup for QEMU's mps2-an385: the vector table, .data/.bss set-up, main. */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);
void uart0_rx_handler(void);
void systick_handler(void);

void reset_handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    main();
    for (;;) {}
}

static void fault_handler(void) { for (;;) {} }

__attribute__((section(".isr_vector"), used))
static void (*const vectors[])(void) = {
    (void (*)(void))&_estack, reset_handler,
    fault_handler, fault_handler, fault_handler, fault_handler, fault_handler,  /* NMI..Usage */
    0, 0, 0, 0, fault_handler, fault_handler, 0, fault_handler,                 /* SVC, PendSV */
    systick_handler,
    uart0_rx_handler,                                                            /* IRQ 0 */
};
