// Package pop3 is popproxy's wire level: it reads bounded command lines, parses
// commands and status lines, checks login credentials, relays multi-line
// bodies unchanged (and measures the messages they carry) and filters CAPA
// lists. It touches no sockets and does no
// logging, so every function here can be fuzzed in isolation.
//
// Typical usage, in a proxy session:
//
//	line, err := pop3.ReadLine(clientReader, pop3.MaxCommandLine)
//	cmd, err := pop3.ParseCommand(line)
//	backend.Write(cmd.AppendWire(nil))
//	status, err := pop3.ReadLine(backendReader, pop3.MaxResponseLine)
//	st, err := pop3.ParseStatus(status)
//	client.WriteString(st.Line() + "\r\n")
//	if st.OK && multiLine {
//		n, err := pop3.CopyBody(client, backendReader, nil)
//	}
package pop3

// Limits from RFC 1939 §3 and RFC 2449 §4.
const (
	// MaxCommandLine is the longest command line a client may send, CRLF included.
	MaxCommandLine = 255
	// MaxResponseLine is the longest first line of a response, CRLF included.
	MaxResponseLine = 512
	// MaxArgLen is the longest argument of a TRANSACTION command.
	MaxArgLen = 40
)
