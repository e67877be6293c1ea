// Walking a parked fiber's stack (dump.cc). A parked fiber's context is the
// frame weft_switch left at its saved stack pointer (switch_x86_64.S):
// mxcsr/fpucw, r15, r14, r13, r12, rbx, rbp, return address.
//
//   void weft_call_on_parked_stack(void* fiber_sp, void (*fn)(void*), void* arg);
//
// Calls fn(arg) with the stack pointer at that frame, on the parked fiber's
// own stack below it. The CFI at the call describes the frame as weft_switch
// does for its caller, so an unwinder started in fn (_Unwind_Backtrace)
// walks on from here into the fiber's frames, up to weft_fiber_trampoline,
// whose CFI ends the walk. The fiber must stay parked meanwhile (the world
// is stopped), and fn must fit in the room its stack has left.
#if defined(__x86_64__)
        .text
        .globl  weft_call_on_parked_stack
        .hidden weft_call_on_parked_stack
        .type   weft_call_on_parked_stack, @function
        .p2align 4
weft_call_on_parked_stack:
        .cfi_startproc
        pushq   %rbp
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbp, 0
        pushq   %rbx
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbx, 0
        movq    %rsp, %rbx
        .cfi_def_cfa_register %rbx
        .cfi_remember_state
        movq    %rdi, %rsp
        movq    %rdx, %rdi
        // The parked fiber's weft_switch frame, as its caller sees it.
        .cfi_def_cfa %rsp, 64
        .cfi_offset 16, -8          // the return address (DWARF column 16)
        .cfi_offset %rbp, -16
        .cfi_offset %rbx, -24
        .cfi_offset %r12, -32
        .cfi_offset %r13, -40
        .cfi_offset %r14, -48
        .cfi_offset %r15, -56
        callq   *%rsi
        .cfi_restore_state
        movq    %rbx, %rsp
        .cfi_def_cfa_register %rsp
        popq    %rbx
        .cfi_adjust_cfa_offset -8
        .cfi_restore %rbx
        popq    %rbp
        .cfi_adjust_cfa_offset -8
        .cfi_restore %rbp
        ret
        .cfi_endproc
        .size   weft_call_on_parked_stack, .-weft_call_on_parked_stack
#endif
        .section .note.GNU-stack,"",@progbits
