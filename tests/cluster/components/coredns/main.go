// coredns with the plugins a cluster's DNS needs (the kubernetes plugin and what a kubeadm
// Corefile uses), built from github.com/coredns/coredns at the version pinned in go.mod.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"

	"github.com/coredns/coredns/coremain"
)

func main() {
	// The directive order is CoreDNS's own; only the plugins imported above are compiled in.
	_ = dnsserver.Directives
	coremain.Run()
}
