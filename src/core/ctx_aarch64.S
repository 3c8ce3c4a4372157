/* Fiber context switch for aarch64 (AAPCS64).
 *
 * void keel__ctx_switch(keel__ctx_t *from, keel__ctx_t *to);
 *   Saves x19-x30, d8-d15 (the callee-saved set) and FPCR (rounding mode,
 *   flush-to-zero: per fiber, as MXCSR is on x86-64) in a 176-byte frame
 *   on the current stack, stores sp in from->sp, loads to->sp, restores.
 *
 * void keel__ctx_trampoline(void);
 *   First return target of a new context: keel__ctx_make leaves the entry
 *   function in x19 and its argument in x20. The entry never returns.
 */
        .text
        .globl  keel__ctx_switch
        .hidden keel__ctx_switch
        .type   keel__ctx_switch, %function
        .p2align 4
keel__ctx_switch:
        .cfi_startproc
        sub     sp, sp, #176
        stp     x19, x20, [sp, #0]
        stp     x21, x22, [sp, #16]
        stp     x23, x24, [sp, #32]
        stp     x25, x26, [sp, #48]
        stp     x27, x28, [sp, #64]
        stp     x29, x30, [sp, #80]
        stp     d8, d9, [sp, #96]
        stp     d10, d11, [sp, #112]
        stp     d12, d13, [sp, #128]
        stp     d14, d15, [sp, #144]
        mrs     x9, fpcr
        str     x9, [sp, #160]
        mov     x9, sp
        str     x9, [x0]
        ldr     x9, [x1]
        mov     sp, x9
        ldp     x19, x20, [sp, #0]
        ldp     x21, x22, [sp, #16]
        ldp     x23, x24, [sp, #32]
        ldp     x25, x26, [sp, #48]
        ldp     x27, x28, [sp, #64]
        ldp     x29, x30, [sp, #80]
        ldp     d8, d9, [sp, #96]
        ldp     d10, d11, [sp, #112]
        ldp     d12, d13, [sp, #128]
        ldp     d14, d15, [sp, #144]
        ldr     x9, [sp, #160]
        msr     fpcr, x9
        add     sp, sp, #176
        ret
        .cfi_endproc
        .size   keel__ctx_switch, .-keel__ctx_switch

        .globl  keel__ctx_trampoline
        .hidden keel__ctx_trampoline
        .type   keel__ctx_trampoline, %function
        .p2align 4
keel__ctx_trampoline:
        .cfi_startproc
        .cfi_undefined x30
        mov     x0, x20
        blr     x19
        brk     #0
        .cfi_endproc
        .size   keel__ctx_trampoline, .-keel__ctx_trampoline

        .section .note.GNU-stack,"",%progbits
