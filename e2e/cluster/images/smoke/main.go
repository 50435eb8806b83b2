// Command smoke is the test program of e2e/cluster/smoke.sh, packed by
// mkimage.py into a one-file image. Standard library only, static (CGO off), so
// its DNS lookups use Go's own resolver and /etc/resolv.conf as the kubelet
// wrote it.
//
//	smoke serve [ADDR]      HTTP on ADDR (default :8080): "/" answers "hello from
//	                        HOSTNAME", "/healthz" answers "ok"; logs every request
//	smoke resolve NAME...   prints "NAME IP[,IP...]" per name, exit 1 on failure
//	smoke get URL           prints the body of GET URL, exit 1 unless 200
//	smoke connect HOST:PORT opens a TCP connection, exit 1 on failure
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: smoke serve [ADDR] | resolve NAME... | get URL | connect HOST:PORT")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		addr := ":8080"
		if len(os.Args) > 2 {
			addr = os.Args[2]
		}
		err = serve(addr)
	case "resolve":
		err = resolve(os.Args[2:])
	case "get":
		err = get(os.Args[2])
	case "connect":
		var c net.Conn
		c, err = net.DialTimeout("tcp", os.Args[2], 3*time.Second)
		if err == nil {
			fmt.Printf("connected to %s from %s\n", c.RemoteAddr(), c.LocalAddr())
			c.Close()
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "smoke:", err)
		os.Exit(1)
	}
}

func serve(addr string) error {
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("request %s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		fmt.Fprintf(w, "hello from %s\n", host)
	})
	log.Printf("smoke %s serving on %s", host, addr)
	return http.ListenAndServe(addr, mux)
}

func resolve(names []string) error {
	failed := 0
	for _, name := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		addrs, err := net.DefaultResolver.LookupHost(ctx, name)
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			failed++
			continue
		}
		fmt.Printf("%s %s\n", name, strings.Join(addrs, ","))
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d names did not resolve", failed, len(names))
	}
	return nil
}

func get(url string) error {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	os.Stdout.Write(body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
