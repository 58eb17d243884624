package daemon

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestAdminLimitsLoopbackOnly: the limits endpoints answer loopback peers
// only, wherever the admin listener is; the metrics are unchanged.
func TestAdminLimitsLoopbackOnly(t *testing.T) {
	base := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("metrics")) })
	h := adminHandler(base, nil)
	for _, tc := range []struct {
		method, target, remote string
		code                   int
	}{
		{"GET", "/limits?name=alice", "192.0.2.1:1234", http.StatusForbidden},
		{"POST", "/limits/clear?name=alice", "[2001:db8::1]:1234", http.StatusForbidden},
		{"POST", "/limits/clear?name=alice", "[::ffff:192.0.2.1]:1234", http.StatusForbidden},
		{"GET", "/limits", "127.0.0.1:1234", http.StatusBadRequest},
		{"POST", "/limits/clear", "[::1]:1234", http.StatusBadRequest},
		{"GET", "/metrics", "192.0.2.1:1234", http.StatusOK},
	} {
		r := httptest.NewRequest(tc.method, tc.target, nil)
		r.RemoteAddr = tc.remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.code {
			t.Errorf("%s %s from %s: %d, want %d", tc.method, tc.target, tc.remote, w.Code, tc.code)
		}
	}
}
