// Walking a parked fiber's stack (dump.cc), AArch64. A parked fiber's
// context is the frame weft_switch left at its saved stack pointer
// (switch_aarch64.S): x19..x28, x29 (frame pointer), x30 (link register),
// d8..d15, fpcr, pad; 176 bytes.
//
//   void weft_call_on_parked_stack(void* fiber_sp, void (*fn)(void*), void* arg);
//
// Calls fn(arg) with the stack pointer at that frame, on the parked fiber's
// own stack below it. The CFI at the call describes the frame as weft_switch
// does for its caller (the return address is the saved x30), so an unwinder
// started in fn (_Unwind_Backtrace) walks on from here into the fiber's
// frames, up to weft_fiber_trampoline, whose CFI ends the walk. The fiber
// must stay parked meanwhile (the world is stopped), and fn must fit in the
// room its stack has left.
#if defined(__aarch64__)
        .text
        .globl  weft_call_on_parked_stack
        .hidden weft_call_on_parked_stack
        .type   weft_call_on_parked_stack, %function
        .p2align 4
weft_call_on_parked_stack:
        .cfi_startproc
        stp     x29, x30, [sp, #-32]!
        .cfi_def_cfa_offset 32
        .cfi_offset x29, -32
        .cfi_offset x30, -24
        str     x19, [sp, #16]
        .cfi_offset x19, -16
        mov     x19, sp
        .cfi_def_cfa_register x19
        .cfi_remember_state
        mov     sp, x0
        mov     x9, x1
        mov     x0, x2
        // The parked fiber's weft_switch frame, as its caller sees it.
        .cfi_def_cfa sp, 176
        .cfi_offset x19, -176
        .cfi_offset x20, -168
        .cfi_offset x21, -160
        .cfi_offset x22, -152
        .cfi_offset x23, -144
        .cfi_offset x24, -136
        .cfi_offset x25, -128
        .cfi_offset x26, -120
        .cfi_offset x27, -112
        .cfi_offset x28, -104
        .cfi_offset x29, -96
        .cfi_offset x30, -88
        blr     x9
        .cfi_restore_state
        mov     sp, x19
        .cfi_def_cfa_register sp
        ldr     x19, [sp, #16]
        .cfi_restore x19
        ldp     x29, x30, [sp], #32
        .cfi_def_cfa_offset 0
        .cfi_restore x29
        .cfi_restore x30
        ret
        .cfi_endproc
        .size   weft_call_on_parked_stack, .-weft_call_on_parked_stack
#endif
        .section .note.GNU-stack,"",%progbits
