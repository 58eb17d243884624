//go:build !windows && !plan9

package audit

import (
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSyslog(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "log")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Skip("no unixgram sockets:", err)
	}
	defer c.Close()
	l, err := dialSyslog("unixgram", sock, "popproxy", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	policy(l, "a\nb")
	policy(l, "c")
	buf := make([]byte, 4096)
	for _, want := range []string{`"rule":"a\nb"}`, `"rule":"c"}`} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		msg := string(buf[:n])
		// <22>: facility mail (2), severity info (6).
		if !strings.HasPrefix(msg, "<22>") || !strings.Contains(msg, " popproxy[") {
			t.Errorf("syslog header: %q", msg)
		}
		record := strings.TrimSuffix(msg[strings.Index(msg, "{"):], "\n")
		if !json.Valid([]byte(record)) || !strings.HasSuffix(record, want) {
			t.Errorf("message %q, want one record ending %s", msg, want)
		}
	}
}
