// Command fastlb-fleet starts a fleet on one machine for trying it out:
// one etcd (in this process), the test backends of config.json, and three
// fastlb instances sharing their backends through etcd, on the ports
// 8080/8081, 8090/8091 and 8100/8101 (proxy/admin). Ctrl-C stops them all.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"fastlb/config"
	"fastlb/testbackends"
)

func main() {
	bin := flag.String("bin", "bin/fastlb", "the fastlb binary")
	cfgPath := flag.String("config", "config.json", "configuration whose backends the test backends serve and the fleet starts with")
	etcdURL := flag.String("etcd", "http://127.0.0.1:2379", "the client URL of the etcd to start")
	flag.Parse()
	log.SetFlags(0)
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "fastlb-fleet")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	e, err := startEtcd(filepath.Join(dir, "etcd"), *etcdURL)
	if err != nil {
		log.Fatalf("etcd: %v", err)
	}
	defer e.Close()
	log.Printf("etcd serving on %s", *etcdURL)

	for _, b := range cfg.Backends {
		s, err := testbackends.Start(b.Addr, testbackends.Options{Name: b.Addr})
		if err != nil {
			log.Fatalf("test backend %s: %v", b.Addr, err)
		}
		defer s.Close()
	}

	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			p.Wait()
		}
	}()
	for i := range 3 {
		name := fmt.Sprintf("lb-%d", i+1)
		port := 8080 + 10*i
		js := fmt.Sprintf(`{"port": %d, "admin_port": %d, "bind": "127.0.0.1", "backends": %s,
  "cluster": {"name": %q, "cache_file": %q, "etcd": {"endpoints": [%q]}}}`,
			port, port+1, backendsJSON(cfg), name, filepath.Join(dir, name+"-cache.json"), *etcdURL)
		path := filepath.Join(dir, name+".json")
		if err := os.WriteFile(path, []byte(js), 0o600); err != nil {
			log.Fatal(err)
		}
		cmd := exec.Command(*bin, "-config", path)
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			log.Fatalf("%s: %v", name, err)
		}
		procs = append(procs, cmd)
		go prefixLines(name, stderr)
		log.Printf("%s: proxy http://127.0.0.1:%d, admin http://127.0.0.1:%d", name, port, port+1)
	}
	log.Printf("try: curl -X POST localhost:8081/api/v1/backends -d '{\"url\": \"http://localhost:8083\", \"id\": \"extra\"}'; curl localhost:8101/api/v1/backends; curl localhost:8091/api/v1/cluster")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	log.Print("stopping")
}

// startEtcd starts a single-member etcd with its data in dir.
func startEtcd(dir, client string) (*embed.Etcd, error) {
	cu, err := url.Parse(client)
	if err != nil {
		return nil, err
	}
	pu, _ := url.Parse("http://127.0.0.1:2380")
	c := embed.NewConfig()
	c.Dir = dir
	c.ListenClientUrls, c.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	c.ListenPeerUrls, c.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	c.InitialCluster = c.Name + "=" + pu.String()
	c.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(c)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("not ready after 30 s")
	}
}

func backendsJSON(cfg *config.Config) string {
	s := "["
	for i, b := range cfg.Backends {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%q", b.URL)
	}
	return s + "]"
}

func prefixLines(name string, r interface{ Read([]byte) (int, error) }) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fmt.Fprintf(os.Stderr, "%s | %s\n", name, sc.Text())
	}
}
