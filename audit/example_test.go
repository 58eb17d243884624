package audit_test

import (
	"net/netip"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/popproxy/popproxy/audit"
	"github.com/popproxy/popproxy/proxy"
)

func ExampleNew() {
	// A fixed clock, so that the output below does not change.
	zerolog.TimestampFunc = func() time.Time { return time.Date(2026, 11, 26, 13, 11, 41, 0, time.UTC) }
	defer func() { zerolog.TimestampFunc = time.Now }()

	log := audit.New(os.Stdout, audit.Options{})
	log.SessionOpen(proxy.SessionInfo{
		ID:       "5f2b9c0e1a7d4c38",
		Listener: "pop3",
		Client:   netip.MustParseAddrPort("192.0.2.10:51234"),
		Local:    netip.MustParseAddrPort("198.51.100.1:110"),
	})
	log.Auth("5f2b9c0e1a7d4c38", proxy.AuthEvent{User: "alice", Mechanism: "USER", OK: true, Upstream: "10.0.0.5:110"})
	// Output:
	// {"time":"2026-11-26T13:11:41.000000Z","event":"session.open","session":"5f2b9c0e1a7d4c38","listener":"pop3","client":"192.0.2.10:51234","local":"198.51.100.1:110"}
	// {"time":"2026-11-26T13:11:41.000000Z","event":"auth","session":"5f2b9c0e1a7d4c38","listener":"pop3","client":"192.0.2.10:51234","user":"alice","mechanism":"USER","ok":true,"upstream":"10.0.0.5:110"}
}
