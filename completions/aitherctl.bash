_aitherctl_completion() {
    local IFS=$'
'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \
                   COMP_CWORD=$COMP_CWORD \
                   _AITHERCTL_COMPLETE=complete_bash $1 ) )
    return 0
}

complete -o default -F _aitherctl_completion aitherctl
