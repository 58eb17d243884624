package main

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
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
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		if name == "" {
			http.Error(w, "name=USER|ADDRESS is missing", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		for _, s := range srv.LimitState(name) {
			printLimitState(w, s)
		}
	}
}

func limitsClearHandler(srv *proxy.Server) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		if name == "" {
			http.Error(w, "name=USER|ADDRESS is missing", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		for _, key := range srv.ClearLimits(name) {
			fmt.Fprintln(w, "cleared", key)
		}
	}
}

// printLimitState is one line of `popproxy limits show`, from the store or
// from an instance.
func printLimitState(w io.Writer, s proxy.LimitState) {
	fmt.Fprintf(w, "%s failures=%d blocked=%s sessions=%d login_delay=%s\n", s.Key, s.Failures,
		s.Blocked.Round(time.Second), s.Sessions, s.LoginDelay.Round(time.Second))
}

// adminLimits is `popproxy limits show|clear` against one instance's admin
// listener at addr (host:port): it copies the answer to stdout.
func adminLimits(addr, sub, name string, stdout io.Writer) error {
	u := "http://" + addr + "/limits"
	method := http.MethodGet
	if sub == "clear" {
		u, method = u+"/clear", http.MethodPost
	}
	req, err := http.NewRequest(method, u+"?name="+url.QueryEscape(name), nil)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: adminTimeout}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("admin listener %s: %s: %s", addr, resp.Status, strings.TrimSpace(string(body)))
	}
	_, err = io.Copy(stdout, resp.Body)
	return err
}
