"""Operations that combine the core with adapters: observe the stack, switch, bring up/down."""
