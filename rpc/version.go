package rpc

import "runtime/debug"

// BuildVersion is the running program's version from its build information, as
// `spool version`, `spoold --version` and daemon.info report it, so that binaries
// built from one tree agree: the module version (a tag or pseudo-version when the
// build stamped it), else "devel" with the commit when known.
func BuildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if rev != "" && v == "devel" {
		v += " (" + rev[:min(12, len(rev))] + modified + ")"
	}
	return v
}
