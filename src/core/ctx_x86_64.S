/* Fiber context switch for x86-64 (System V ABI).
 *
 * void keel__ctx_switch(keel__ctx_t *from, keel__ctx_t *to);
 *   Pushes the callee-saved registers and the SSE/x87 control words on the
 *   current stack, stores the stack pointer in from->sp, loads to->sp and
 *   pops the same frame: a switch is 8 pushes, 8 pops and two moves.
 *
 * void keel__ctx_trampoline(void);
 *   First "return" target of a new context: keel__ctx_make leaves the entry
 *   function in r12 and its argument in r13. The entry never returns.
 */
        .text
        .globl  keel__ctx_switch
        .hidden keel__ctx_switch
        .type   keel__ctx_switch, @function
        .p2align 4
keel__ctx_switch:
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
        movq    (%rsi), %rsp
        ldmxcsr (%rsp)
        fldcw   4(%rsp)
        addq    $8, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
        ret
        .cfi_endproc
        .size   keel__ctx_switch, .-keel__ctx_switch

        .globl  keel__ctx_trampoline
        .hidden keel__ctx_trampoline
        .type   keel__ctx_trampoline, @function
        .p2align 4
keel__ctx_trampoline:
        .cfi_startproc
        .cfi_undefined rip
        movq    %r13, %rdi
        callq   *%r12
        ud2
        .cfi_endproc
        .size   keel__ctx_trampoline, .-keel__ctx_trampoline

        .section .note.GNU-stack,"",@progbits
