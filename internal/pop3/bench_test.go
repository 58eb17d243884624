package pop3

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

// message is a 1 MiB body of 78-octet lines, some dot-stuffed, terminated.
var message = func() []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < 1<<20; i++ {
		if i%50 == 0 {
			b.WriteString("..a line that was dot-stuffed by the server, as RFC 1939 says\r\n")
			continue
		}
		b.WriteString("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ABCDEFGHIJ\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}()

// BenchmarkCopyBody measures the relay's terminator scan and copy through a
// 32 KiB reader, the proxy's buffer size.
func BenchmarkCopyBody(b *testing.B) {
	src := bytes.NewReader(message)
	br := bufio.NewReaderSize(src, 32<<10)
	b.SetBytes(int64(len(message)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(message)
		br.Reset(src)
		if _, err := CopyBody(io.Discard, br, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCopyBodyLineByLine is the naive alternative the relay avoids:
// ReadSlice per line, for comparison.
func BenchmarkCopyBodyLineByLine(b *testing.B) {
	src := bytes.NewReader(message)
	br := bufio.NewReaderSize(src, 32<<10)
	b.SetBytes(int64(len(message)))
	for b.Loop() {
		src.Reset(message)
		br.Reset(src)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			io.Discard.Write(line)
			if string(line) == ".\r\n" {
				break
			}
		}
	}
}

func BenchmarkParseCommand(b *testing.B) {
	line := []byte("top 12345 10")
	b.ReportAllocs()
	for b.Loop() {
		cmd, err := ParseCommand(line)
		if err != nil {
			b.Fatal(err)
		}
		cmd.AppendWire(make([]byte, 0, 64))
	}
}

func BenchmarkReadLine(b *testing.B) {
	input := bytes.Repeat([]byte("RETR 1\r\n"), 1024)
	src := bytes.NewReader(input)
	br := bufio.NewReaderSize(src, 1024)
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(input)
		br.Reset(src)
		for range 1024 {
			if _, err := ReadLine(br, MaxCommandLine); err != nil {
				b.Fatal(err)
			}
		}
	}
}
