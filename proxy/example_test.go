package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/popproxy/popproxy/internal/maildrop"
	"github.com/popproxy/popproxy/internal/route"
	"github.com/popproxy/popproxy/proxy"
)

// A proxy in front of one POP3 server, serving one listener until shut down.
func Example() {
	// The upstream: here the sample mail drop, in a real deployment the
	// legacy server's host:port.
	upstream, _ := net.Listen("tcp", "127.0.0.1:0")
	drop := maildrop.New(map[string]string{"alice": "secret"}, []maildrop.Message{{Data: []byte("Subject: hi\r\n\r\nhello\r\n")}})
	go drop.Serve(upstream)
	defer drop.Close()

	// Every user goes to the upstream named "store".
	router, err := route.New(route.Config{
		Upstreams: []route.Upstream{{Name: "store", Addresses: []string{upstream.Addr().String()}}},
		Default:   "store",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := proxy.New(proxy.Options{Router: router, Upstreams: map[string]proxy.Upstream{"store": {}}})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(l, proxy.Listener{Name: "pop3"})
	defer srv.Shutdown(context.Background())

	c, _ := net.Dial("tcp", l.Addr().String())
	defer c.Close()
	r := bufio.NewReader(c)
	say := func(cmd string) {
		if cmd != "" {
			fmt.Fprintf(c, "%s\r\n", cmd)
		}
		line, _ := r.ReadString('\n')
		status, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		fmt.Println(cmd, "->", status)
	}
	say("") // the greeting
	say("USER alice")
	say("PASS secret")
	say("STAT")
	say("QUIT")
	// Output:
	//  -> +OK
	// USER alice -> +OK
	// PASS secret -> +OK
	// STAT -> +OK
	// QUIT -> +OK
}
