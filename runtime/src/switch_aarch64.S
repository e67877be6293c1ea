// Context switch for AArch64 (AAPCS64). Saves the callee-saved registers
// x19-x28, the frame pointer and link register, the low halves d8-d15 of
// v8-v15, and FPCR (rounding mode and trap bits).
//
//   void weft_switch(void** save_sp, void* load_sp);
//
// Frame at *save_sp (low to high): x19..x30 (96 bytes), d8..d15 (64), fpcr (8), pad (8)
#if defined(__aarch64__)
        .text
        .globl  weft_switch
        .hidden weft_switch
        .type   weft_switch, %function
        .p2align 4
weft_switch:
        .cfi_startproc
        sub     sp, sp, #176
        stp     x19, x20, [sp, #0]
        stp     x21, x22, [sp, #16]
        stp     x23, x24, [sp, #32]
        stp     x25, x26, [sp, #48]
        stp     x27, x28, [sp, #64]
        stp     x29, x30, [sp, #80]
        stp     d8,  d9,  [sp, #96]
        stp     d10, d11, [sp, #112]
        stp     d12, d13, [sp, #128]
        stp     d14, d15, [sp, #144]
        mrs     x9, fpcr
        str     x9, [sp, #160]
        mov     x9, sp
        str     x9, [x0]
        mov     sp, x1
        ldr     x9, [sp, #160]
        msr     fpcr, x9
        ldp     x19, x20, [sp, #0]
        ldp     x21, x22, [sp, #16]
        ldp     x23, x24, [sp, #32]
        ldp     x25, x26, [sp, #48]
        ldp     x27, x28, [sp, #64]
        ldp     x29, x30, [sp, #80]
        ldp     d8,  d9,  [sp, #96]
        ldp     d10, d11, [sp, #112]
        ldp     d12, d13, [sp, #128]
        ldp     d14, d15, [sp, #144]
        add     sp, sp, #176
        ret
        .cfi_endproc
        .size   weft_switch, .-weft_switch

// weft_switch "returns" here for a new fiber: x19 holds the fiber record and
// x20 the entry function, which never returns.
        .globl  weft_fiber_trampoline
        .hidden weft_fiber_trampoline
        .type   weft_fiber_trampoline, %function
        .p2align 4
weft_fiber_trampoline:
        .cfi_startproc
        .cfi_undefined x30
        mov     x29, #0
        mov     x0, x19
        blr     x20
        brk     #0
        .cfi_endproc
        .size   weft_fiber_trampoline, .-weft_fiber_trampoline
#endif
        .section .note.GNU-stack,"",%progbits
