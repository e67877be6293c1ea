// Context switch for x86-64 System V. Saves only what the ABI says a callee
// must preserve: rbx, rbp, r12-r15, the MXCSR control bits and the x87
// control word. Everything else is already saved by the caller of the switch.
//
//   void weft_switch(void** save_sp, void* load_sp);
//
// Frame at *save_sp (low to high): mxcsr(4) fpucw(2) pad(2) r15 r14 r13 r12 rbx rbp ret
#if defined(__x86_64__)
        .text
        .globl  weft_switch
        .hidden weft_switch
        .type   weft_switch, @function
        .p2align 4
weft_switch:
        .cfi_startproc
        pushq   %rbp
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        subq    $8, %rsp
        stmxcsr (%rsp)
        fnstcw  4(%rsp)
        movq    %rsp, (%rdi)
        movq    %rsp, %rax
        movq    %rsi, %rsp
        // ldmxcsr and fldcw stall the pipeline and fibers almost never differ,
        // so compare first. Each compare reads a saved word at the size it was
        // stored, which keeps store-to-load forwarding on the fast path.
        movl    (%rax), %ecx
        cmpl    (%rsp), %ecx
        jne     2f
        movzwl  4(%rax), %ecx
        cmpw    4(%rsp), %cx
        jne     2f
1:      addq    $8, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
        ret
2:      ldmxcsr (%rsp)
        fldcw   4(%rsp)
        jmp     1b
        .cfi_endproc
        .size   weft_switch, .-weft_switch

// First code a new fiber runs: weft_switch "returns" here with the fiber
// record in r12 and the entry function in r13. The entry never returns.
        .globl  weft_fiber_trampoline
        .hidden weft_fiber_trampoline
        .type   weft_fiber_trampoline, @function
        .p2align 4
weft_fiber_trampoline:
        .cfi_startproc
        .cfi_undefined rip
        movq    %r12, %rdi
        andq    $-16, %rsp
        callq   *%r13
        ud2
        .cfi_endproc
        .size   weft_fiber_trampoline, .-weft_fiber_trampoline
#endif
        .section .note.GNU-stack,"",@progbits
