package maildrop_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"

	"github.com/popproxy/popproxy/internal/maildrop"
)

// A short POP3 session against the sample mailbox.
func Example() {
	srv := maildrop.New(map[string]string{"demo": "demo"}, maildrop.Sample())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(l)
	defer srv.Close()

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	r := bufio.NewReader(c)
	// PIPELINING: send the whole conversation at once.
	fmt.Fprint(c, "USER demo\r\nPASS demo\r\nSTAT\r\nUIDL 1\r\nQUIT\r\n")
	for range 6 { // greeting and five replies
		line, err := r.ReadString('\n')
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(strings.TrimSuffix(line, "\r\n"))
	}
	// Output:
	// +OK maildrop ready
	// +OK send PASS
	// +OK demo's maildrop has 4 messages (22576 octets)
	// +OK 4 22576
	// +OK 1 5ed9ccfffe2cdf0f-1
	// +OK maildrop signing off (4 messages left)
}
