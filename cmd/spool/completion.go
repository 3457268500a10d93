package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// flagInfo is what completion needs of a flag.
type flagInfo struct {
	name  string
	usage string
	value bool // takes a value
}

// spelling is the flag as written on the command line: -f, --name.
func (f flagInfo) spelling() string {
	if len(f.name) == 1 {
		return "-" + f.name
	}
	return "--" + f.name
}

// commandFlags lists the visible flags of cmd, global ones included.
func commandFlags(cmd *command) []flagInfo {
	scratch := &app{}
	fs := scratch.newFlagSet(cmd)
	cmd.define(scratch, fs)
	var out []flagInfo
	fs.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Usage, hiddenFlag) {
			return
		}
		_, usage := flag.UnquoteUsage(f)
		b, ok := f.Value.(interface{ IsBoolFlag() bool })
		out = append(out, flagInfo{name: f.Name, usage: usage, value: !ok || !b.IsBoolFlag()})
	})
	return out
}

func defineCompletion(a *app, fs *flag.FlagSet) runner {
	return func(ctx context.Context, args []string) error {
		if len(args) != 1 {
			return usagef("usage: spool completion bash|zsh|fish")
		}
		var script string
		switch args[0] {
		case "bash":
			script = bashCompletion()
		case "zsh":
			script = zshCompletion()
		case "fish":
			script = fishCompletion()
		default:
			return usagef("completion: unknown shell %q (bash, zsh, fish)", args[0])
		}
		_, err := io.WriteString(a.stdout, script)
		return err
	}
}

// completionModel is what every script is generated from.
type completionModel struct {
	names      []string
	idCommands []string
	flags      map[string][]flagInfo
	valueFlags []string // spellings of every flag that takes a value
}

func newCompletionModel() completionModel {
	m := completionModel{flags: map[string][]flagInfo{}}
	values := map[string]bool{}
	for _, c := range commandList() {
		m.names = append(m.names, c.name)
		if c.ids {
			m.idCommands = append(m.idCommands, c.name)
		}
		fl := commandFlags(&c)
		m.flags[c.name] = fl
		for _, f := range fl {
			if f.value {
				values[f.spelling()] = true
			}
		}
	}
	for s := range values {
		m.valueFlags = append(m.valueFlags, s)
	}
	sort.Strings(m.valueFlags)
	return m
}

func spellings(fl []flagInfo) string {
	parts := make([]string, len(fl))
	for i, f := range fl {
		parts[i] = f.spelling()
	}
	return strings.Join(parts, " ")
}

const jobStates = "queued running succeeded failed cancelled"

func bashCompletion() string {
	m := newCompletionModel()
	var b strings.Builder
	b.WriteString(`# bash completion for spool. Load it with:
#   source <(spool completion bash)
_spool() {
    local cur prev cmd i
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    cmd=""
    local argc=0 dashdash=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            --) [[ -n "$cmd" ]] && dashdash=1 ;;
`)
	fmt.Fprintf(&b, "            %s) ((i++)) ;;\n", strings.Join(m.valueFlags, "|"))
	b.WriteString(`            -*) ;;
            *)
                if [[ -z "$cmd" ]]; then cmd="${COMP_WORDS[i]}"; else ((argc++)); fi
                ;;
        esac
    done
    if [[ -z "$cmd" ]]; then
        if [[ "$cur" == -* ]]; then
            COMPREPLY=($(compgen -W "--socket --json --help" -- "$cur"))
        else
`)
	fmt.Fprintf(&b, "            COMPREPLY=($(compgen -W %q -- \"$cur\"))\n", strings.Join(m.names, " "))
	b.WriteString(`        fi
        return
    fi
    if [[ "$cmd" == submit && $dashdash == 1 ]]; then
        if [[ $argc == 0 ]]; then
            COMPREPLY=($(compgen -c -- "$cur"))
        else
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return
    fi
    case "$prev" in
        --socket|-f) COMPREPLY=($(compgen -f -- "$cur")); return ;;
`)
	fmt.Fprintf(&b, "        --state) COMPREPLY=($(compgen -W %q -- \"$cur\")); return ;;\n", jobStates)
	fmt.Fprintf(&b, "        %s) COMPREPLY=(); return ;;\n", strings.Join(m.valueFlags, "|"))
	b.WriteString(`    esac
    local flags="" ids=0
    case "$cmd" in
`)
	for _, name := range m.names {
		fmt.Fprintf(&b, "        %s) flags=%q ;;\n", name, spellings(m.flags[name]))
	}
	b.WriteString("    esac\n    case \"$cmd\" in\n")
	fmt.Fprintf(&b, "        %s) ids=1 ;;\n", strings.Join(m.idCommands, "|"))
	b.WriteString(`    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
        return
    fi
    case "$cmd" in
        completion) [[ $argc == 0 ]] && COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur")); return ;;
        template)
            if [[ $argc == 0 ]]; then
                COMPREPLY=($(compgen -W "put get list rm" -- "$cur"))
            else
                COMPREPLY=($(compgen -f -- "$cur"))
            fi
            return ;;
        submit) COMPREPLY=($(compgen -c -- "$cur")); return ;;
    esac
    if [[ $ids == 1 ]]; then
        COMPREPLY=($(compgen -W "$(spool status --ids-only 2>/dev/null)" -- "$cur"))
    fi
}
complete -F _spool spool
`)
	return b.String()
}

func zshCompletion() string {
	m := newCompletionModel()
	var b strings.Builder
	b.WriteString(`#compdef spool
# zsh completion for spool. Load it with:
#   source <(spool completion zsh)
# or save it as _spool in a folder of $fpath.
_spool() {
    local -a commands flags
    local cmd i ids=0 argc=0
    commands=(
`)
	for _, c := range commandList() {
		fmt.Fprintf(&b, "        %s\n", zshQuote(c.name+":"+c.summary))
	}
	b.WriteString(`    )
    for (( i = 2; i < CURRENT; i++ )); do
        case ${words[i]} in
`)
	fmt.Fprintf(&b, "            %s) (( i++ )) ;;\n", strings.Join(m.valueFlags, "|"))
	b.WriteString(`            -*) ;;
            *)
                if [[ -z $cmd ]]; then cmd=${words[i]}; else (( argc++ )); fi
                ;;
        esac
    done
    if [[ -z $cmd ]]; then
        if [[ $PREFIX == -* ]]; then
            compadd -- --socket --json --help
        else
            _describe -t commands 'spool command' commands
        fi
        return
    fi
    case ${words[CURRENT-1]} in
        --socket|-f) _files; return ;;
`)
	fmt.Fprintf(&b, "        --state) compadd -- %s; return ;;\n", jobStates)
	fmt.Fprintf(&b, "        %s) return ;;\n", strings.Join(m.valueFlags, "|"))
	b.WriteString("    esac\n    case $cmd in\n")
	for _, name := range m.names {
		fmt.Fprintf(&b, "        %s) flags=(%s) ;;\n", name, spellings(m.flags[name]))
	}
	fmt.Fprintf(&b, "    esac\n    case $cmd in\n        %s) ids=1 ;;\n    esac\n", strings.Join(m.idCommands, "|"))
	b.WriteString(`    if [[ $PREFIX == -* ]]; then
        compadd -- $flags
        return
    fi
    case $cmd in
        completion) (( argc == 0 )) && compadd -- bash zsh fish; return ;;
        template)
            if (( argc == 0 )); then
                compadd -- put get list rm
            else
                _files
            fi
            return ;;
        submit) _command_names -e; return ;;
    esac
    if (( ids )); then
        compadd -- ${(f)"$(spool status --ids-only 2>/dev/null)"}
    fi
}
if [[ $funcstack[1] == _spool ]]; then
    _spool "$@"
else
    compdef _spool spool
fi
`)
	return b.String()
}

// zshQuote quotes s in single quotes for zsh, escaping a colon in the description
// as _describe wants (the first colon separates the name).
func zshQuote(s string) string {
	name, desc, _ := strings.Cut(s, ":")
	desc = strings.ReplaceAll(desc, ":", `\:`)
	return "'" + strings.ReplaceAll(name+":"+desc, "'", `'\''`) + "'"
}

// fishQuote quotes s in single quotes for fish.
func fishQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}

func fishCompletion() string {
	m := newCompletionModel()
	var b strings.Builder
	b.WriteString(`# fish completion for spool. Load it with:
#   spool completion fish | source
# or save it as ~/.config/fish/completions/spool.fish.
complete -c spool -f
complete -c spool -n __fish_use_subcommand -l socket -r -F -d 'the daemon socket'
complete -c spool -n __fish_use_subcommand -l json -d 'print JSON as in the protocol'
`)
	for _, c := range commandList() {
		fmt.Fprintf(&b, "complete -c spool -n __fish_use_subcommand -a %s -d %s\n", c.name, fishQuote(c.summary))
	}
	for _, name := range m.names {
		cond := fishQuote("__fish_seen_subcommand_from " + name)
		for _, f := range m.flags[name] {
			opt := "-l " + f.name
			if len(f.name) == 1 {
				opt = "-s " + f.name
			}
			switch {
			case f.name == "state":
				opt += " -x -a " + fishQuote(jobStates)
			case f.name == "socket" || f.name == "f":
				opt += " -r -F"
			case f.value:
				opt += " -x"
			}
			fmt.Fprintf(&b, "complete -c spool -n %s %s -d %s\n", cond, opt, fishQuote(f.usage))
		}
	}
	fmt.Fprintf(&b, "complete -c spool -n %s -a '(spool status --ids-only 2>/dev/null)'\n",
		fishQuote("__fish_seen_subcommand_from "+strings.Join(m.idCommands, " ")))
	b.WriteString(`complete -c spool -n '__fish_seen_subcommand_from completion' -a 'bash zsh fish'
complete -c spool -n '__fish_seen_subcommand_from template' -a 'put get list rm'
complete -c spool -n '__fish_seen_subcommand_from template' -F
complete -c spool -n '__fish_seen_subcommand_from submit' -a '(__fish_complete_command)'
`)
	return b.String()
}
