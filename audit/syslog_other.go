//go:build windows || plan9

package audit

import "errors"

// OpenSyslog fails: log/syslog is not available on this system.
func OpenSyslog(tag string, opts Options) (*Log, error) {
	return nil, errors.New("audit: syslog is not supported on this system")
}
