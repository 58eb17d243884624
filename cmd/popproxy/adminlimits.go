package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

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
