"""Serial bridge to microcontroller firmware (arrives with the microcontroller issue)."""
