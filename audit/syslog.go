//go:build !windows && !plan9

package audit

import (
	"fmt"
	"log/syslog"
)

// OpenSyslog returns a Log sending each record as one message to the local
// syslog daemon, with facility mail and severity info, tagged tag. Syslog
// daemons may truncate long messages (rsyslog: 8 KiB by default).
func OpenSyslog(tag string, opts Options) (*Log, error) {
	return dialSyslog("", "", tag, opts)
}

// dialSyslog is OpenSyslog with syslog.Dial's network and address, for tests.
func dialSyslog(network, raddr, tag string, opts Options) (*Log, error) {
	w, err := syslog.Dial(network, raddr, syslog.LOG_MAIL|syslog.LOG_INFO, tag)
	if err != nil {
		return nil, fmt.Errorf("audit: syslog: %w", err)
	}
	s := newSink(w, "syslog", opts)
	s.c = w
	return newLog(s), nil
}
