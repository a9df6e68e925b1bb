// etcd, built from go.etcd.io/etcd/server/v3 at the version pinned in go.mod (the one
// k8s.io/kubernetes itself is built and tested against).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
