/* Firmware entry: bring the board up, then serve the host. */
#include "ek_board.h"
#include "ek_protocol.h"

int main(void) {
    board_init();
    ek_serve();
    return 0;
}
