package testdovecot

import (
	"encoding/json"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
)

// Introspection is an OAuth 2.0 token introspection endpoint (RFC 7662) on
// loopback, for Config.OAuth2IntrospectionURL: it answers a POSTed
// token=... with {"active": true, "username": USER} for a token it knows,
// and {"active": false} for any other.
type Introspection struct {
	// URL is where Dovecot posts tokens.
	URL      string
	tokens   map[string]string
	requests atomic.Int64
}

// NewIntrospection serves tokens, which maps each valid token to its
// user, until the test ends.
func NewIntrospection(t testing.TB, tokens map[string]string) *Introspection {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	in := &Introspection{URL: "http://" + l.Addr().String() + "/introspect", tokens: tokens}
	srv := &http.Server{Handler: http.HandlerFunc(in.serve)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return in
}

// Requests returns how many tokens were asked about.
func (in *Introspection) Requests() int64 { return in.requests.Load() }

func (in *Introspection) serve(w http.ResponseWriter, r *http.Request) {
	in.requests.Add(1)
	answer := map[string]any{"active": false}
	if user, ok := in.tokens[r.PostFormValue("token")]; ok && r.Method == http.MethodPost {
		answer = map[string]any{"active": true, "username": user}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(answer)
}
