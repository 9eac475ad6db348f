// Package version says which build of Breakwater is running: the module
// version and VCS revision Go stamps into every binary, read with
// runtime/debug.ReadBuildInfo. The worker's heartbeat, its admin service
// and both commands' --version report the same.
package version

import (
	"runtime/debug"
	"strings"
)

// Info is what a binary knows of its own build.
type Info struct {
	// Version is the main module's version ("v1.2.3", a pseudo-version,
	// or "dev" when built from a work tree without one).
	Version string
	// Revision is the VCS commit, "" when the build was not stamped (go
	// run, go test, -buildvcs=false).
	Revision string
	// Modified reports uncommitted changes in the build's work tree.
	Modified bool
	// GoVersion is the toolchain that built the binary.
	GoVersion string
}

// Get reads the running binary's build information.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: "dev"}
	}
	return fromBuildInfo(bi)
}

func fromBuildInfo(bi *debug.BuildInfo) Info {
	in := Info{Version: bi.Main.Version, GoVersion: bi.GoVersion}
	if in.Version == "" || in.Version == "(devel)" {
		in.Version = "dev"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}

// String is the one-line form --version prints and the heartbeat carries:
// "v1.2.3", "dev (0123456789ab)", "dev (0123456789ab, modified)".
func (in Info) String() string {
	if in.Revision == "" {
		return in.Version
	}
	rev := in.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	// A pseudo-version already names the commit (and, with +dirty,
	// the changes).
	if strings.Contains(in.Version, rev) {
		rev = ""
	}
	var extra []string
	if rev != "" {
		extra = append(extra, rev)
	}
	if in.Modified && !strings.HasSuffix(in.Version, "+dirty") {
		extra = append(extra, "modified")
	}
	if len(extra) == 0 {
		return in.Version
	}
	return in.Version + " (" + strings.Join(extra, ", ") + ")"
}

// Semver is the version in the form NATS micro services require (a
// semantic version): a tagged version without its "v", else
// "0.0.0-dev+REV".
func (in Info) Semver() string {
	v := strings.TrimPrefix(in.Version, "v")
	if v == "dev" {
		v = "0.0.0-dev"
		if in.Revision != "" {
			rev := in.Revision
			if len(rev) > 12 {
				rev = rev[:12]
			}
			v += "+" + rev
		}
	}
	return v
}
