package version

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	rev := "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		name       string
		give       debug.BuildInfo
		wantString string
		wantSemver string
	}{
		{name: "go test", give: debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			wantString: "dev", wantSemver: "0.0.0-dev"},
		{name: "work tree build", give: debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "true"}}},
			wantString: "dev (0123456789ab, modified)", wantSemver: "0.0.0-dev+0123456789ab"},
		{name: "tagged", give: debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}}},
			wantString: "v1.4.0 (0123456789ab)", wantSemver: "1.4.0"},
		{name: "pseudo-version names its commit", give: debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261202062000-0123456789ab"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}}},
			wantString: "v0.0.0-20261202062000-0123456789ab", wantSemver: "0.0.0-20261202062000-0123456789ab"},
		{name: "go 1.24 dirty pseudo-version", give: debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261202062000-0123456789ab+dirty"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "true"}}},
			wantString: "v0.0.0-20261202062000-0123456789ab+dirty", wantSemver: "0.0.0-20261202062000-0123456789ab+dirty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := fromBuildInfo(&tt.give)
			if got := in.String(); got != tt.wantString {
				t.Errorf("String() = %q, want %q", got, tt.wantString)
			}
			if got := in.Semver(); got != tt.wantSemver {
				t.Errorf("Semver() = %q, want %q", got, tt.wantSemver)
			}
		})
	}
}
