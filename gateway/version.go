package gateway

import "runtime/debug"

// devVersion is Version when neither the link nor the build info says
// which build this is.
const devVersion = "dev"

// Version is the gateway's version: set at build time with
// -ldflags "-X github.com/wsgateway/gateway/gateway.Version=..." (the
// Makefile stamps `git describe`), else taken from the binary's build info
// (a plain `go build` or `go install`; see versionFromBuildInfo).
var Version = devVersion

func init() {
	if Version != devVersion {
		return // stamped by the linker
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		Version = versionFromBuildInfo(bi)
	}
}

// revisionLen is how many hex digits of the VCS revision a version from
// build info keeps (as Go's pseudo-versions do).
const revisionLen = 12

// versionFromBuildInfo names the build from its build info: the main
// module's version when the go command gave it one (go install of a tagged
// module; go build derives one from VCS tags since Go 1.24), else the VCS
// revision, short, with "-dirty" when the work tree was modified, else
// devVersion (go test and go run record neither).
func versionFromBuildInfo(bi *debug.BuildInfo) string {
	if bi == nil {
		return devVersion
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := VCSRevision(bi)
	if rev == "" {
		return devVersion
	}
	if len(rev) > revisionLen {
		rev = rev[:revisionLen]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

// VCSRevision returns the VCS revision bi records and whether the work tree
// was modified; "" when it records none (go test, go run, a build outside a
// repository) or bi is nil.
func VCSRevision(bi *debug.BuildInfo) (rev string, modified bool) {
	if bi == nil {
		return "", false
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	return rev, modified
}
