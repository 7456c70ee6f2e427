// Command testbackends starts test HTTP backends: by default one for each
// local backend of a fastlb configuration file, or one per port given.
//
//	testbackends -config config.json
//	testbackends -ports 9001,9002 -latency 5ms -error-rate 0.01 -size 1024
//	testbackends -config config.json -list-ports   # print the ports and exit
//
// Ctrl-C (SIGINT) or SIGTERM stops them all.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"fastlb/config"
	"fastlb/testbackends"
)

func main() {
	cfgPath := flag.String("config", "", "start a backend for every local backend of this fastlb configuration file")
	ports := flag.String("ports", "", "comma-separated ports to listen on (instead of -config)")
	bind := flag.String("bind", "127.0.0.1", "address to listen on with -ports")
	var opts testbackends.Options
	flag.DurationVar(&opts.Latency, "latency", 0, "delay added to every answer")
	flag.Float64Var(&opts.ErrorRate, "error-rate", 0, "fraction of ordinary requests answered 500 (0..1)")
	flag.IntVar(&opts.Size, "size", 0, "body size of ordinary answers in bytes")
	listOnly := flag.Bool("list-ports", false, "print the ports that would be served, one a line, and exit")
	flag.Parse()

	addrs, err := listenAddrs(*cfgPath, *ports, *bind)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbackends:", err)
		os.Exit(1)
	}
	if *listOnly {
		for _, a := range addrs {
			_, port, _ := net.SplitHostPort(a)
			fmt.Println(port)
		}
		return
	}
	var servers []*testbackends.Server
	for _, addr := range addrs {
		o := opts
		o.Name = addr
		s, err := testbackends.Start(addr, o)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testbackends: cannot listen on %s: %v\n", addr, err)
			for _, s := range servers {
				s.Close()
			}
			os.Exit(1)
		}
		servers = append(servers, s)
		slog.Info("test backend serving", "addr", s.Addr(), "latency", opts.Latency, "error_rate", opts.ErrorRate, "size", opts.Size)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	for _, s := range servers {
		s.Close()
	}
}

func listenAddrs(cfgPath, ports, bind string) ([]string, error) {
	switch {
	case ports != "" && cfgPath != "":
		return nil, fmt.Errorf("give -config or -ports, not both")
	case ports != "":
		var out []string
		for p := range strings.SplitSeq(ports, ",") {
			out = append(out, net.JoinHostPort(bind, strings.TrimSpace(p)))
		}
		return out, nil
	case cfgPath != "":
		cfg, err := config.Load(cfgPath)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, b := range cfg.Backends {
			switch b.Host {
			case "localhost", "127.0.0.1", "::1":
				if b.Scheme != "http" {
					return nil, fmt.Errorf("backend %s: test backends speak plain http only", b.ID)
				}
				_, port, _ := net.SplitHostPort(b.Addr)
				out = append(out, net.JoinHostPort("127.0.0.1", port))
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("%s names no local backends", cfgPath)
		}
		return out, nil
	}
	return nil, fmt.Errorf("give -config FILE or -ports LIST")
}
