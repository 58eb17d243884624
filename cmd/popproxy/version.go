package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set by release builds:
//
//	go build -ldflags "-X main.version=1.2.0 -X main.buildDate=$(date -u +%FT%TZ)" ./cmd/popproxy
var (
	version   string
	buildDate string
)

// printVersion writes what `popproxy version` prints.
func printVersion(w io.Writer) error {
	bi, _ := debug.ReadBuildInfo() // nil only in a binary built without module support
	_, err := io.WriteString(w, versionText(bi, version, buildDate))
	return err
}

// versionText describes a build: the version (-X main.version, else the
// module version go install stamps, else "devel"), then the VCS revision and
// commit time that go build stamps in a checkout, the build date if
// -X main.buildDate gave one, and the Go toolchain.
func versionText(bi *debug.BuildInfo, version, buildDate string) string {
	settings := map[string]string{}
	goVersion := runtime.Version()
	if bi != nil {
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
		goVersion = bi.GoVersion
	}
	if version == "" {
		version = "devel"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "popproxy %s\n", version)
	if rev := settings["vcs.revision"]; rev != "" {
		if settings["vcs.modified"] == "true" {
			rev += " (with uncommitted changes)"
		}
		fmt.Fprintf(&b, "  revision   %s\n", rev)
	}
	if t := settings["vcs.time"]; t != "" {
		fmt.Fprintf(&b, "  committed  %s\n", t)
	}
	if buildDate != "" {
		fmt.Fprintf(&b, "  built      %s\n", buildDate)
	}
	fmt.Fprintf(&b, "  go         %s %s/%s\n", goVersion, runtime.GOOS, runtime.GOARCH)
	return b.String()
}
