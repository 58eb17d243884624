package daemon

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"time"

	"github.com/popproxy/popproxy/proxy"
)

// adminHandler adds the instance's own limits to the admin listener's
// handler: GET /limits?name=USER|ADDRESS shows them, POST
// /limits/clear?name=... clears them, both in `popproxy limits`'s words.
// They answer loopback peers only, whatever admin.address is, since clearing
// a block is not something to open to a network without authentication.
func adminHandler(base http.Handler, srv *proxy.Server) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", base)
	mux.Handle("GET /limits", loopbackOnly(limitsShowHandler(srv)))
	mux.Handle("POST /limits/clear", loopbackOnly(limitsClearHandler(srv)))
	return mux
}

// loopbackOnly refuses requests from anywhere but loopback.
func loopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err != nil || !ap.Addr().Unmap().IsLoopback() {
			http.Error(w, "limits are served to loopback only", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func limitsShowHandler(srv *proxy.Server) http.HandlerFunc {
	return limitsHandler(func(w io.Writer, name string) {
		for _, s := range srv.LimitState(name) {
			PrintLimitState(w, s)
		}
	})
}

func limitsClearHandler(srv *proxy.Server) http.HandlerFunc {
	return limitsHandler(func(w io.Writer, name string) {
		for _, key := range srv.ClearLimits(name) {
			fmt.Fprintln(w, "cleared", key)
		}
	})
}

// limitsHandler answers a request naming a user or address with what
// answer writes about it, as text.
func limitsHandler(answer func(w io.Writer, name string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		if name == "" {
			http.Error(w, "name=USER|ADDRESS is missing", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		answer(w, name)
	}
}

// PrintLimitState is one line of `popproxy limits show`, from the store or
// from an instance.
func PrintLimitState(w io.Writer, s proxy.LimitState) {
	fmt.Fprintf(w, "%s failures=%d blocked=%s sessions=%d login_delay=%s\n", s.Key, s.Failures,
		s.Blocked.Round(time.Second), s.Sessions, s.LoginDelay.Round(time.Second))
}
