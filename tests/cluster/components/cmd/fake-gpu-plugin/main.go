// fake-gpu-plugin advertises fake accelerators to the kubelet through the real device-plugin API
// (k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1), so that `nvidia.com/gpu` (or `amd.com/gpu`,
// `habana.ai/gaudi`: --resource) is counted, allocated and handed to containers by the kubelet
// itself. A container that gets devices sees them the way the vendor's plugin shows them, with
// device nodes backed by /dev/null here, as there is no driver:
//   - nvidia.com/gpu: NVIDIA_VISIBLE_DEVICES lists the allocated GPU UUIDs, /dev/nvidia<i>;
//   - amd.com/gpu: no variable (AMD's plugin sets none), /dev/kfd and /dev/dri/card<i> and
//     /dev/dri/renderD<128+i>;
//   - habana.ai/gaudi: HABANA_VISIBLE_DEVICES lists the indices, /dev/accel/accel<i> and
//     /dev/accel/accel_controlD<i>.
//
// Intel's gpu.intel.com/* is not faked: its containers are told apart only by /sys (the render
// node's PCI vendor), which a fake cannot provide.
//
// One process advertises one resource; a node runs one per resource, each on its own socket.
// The kubelet deletes every plugin socket when it restarts; the plugin then serves and registers
// again, as real plugins do.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	node   string
	count  int
	vendor vendor
}

// vendor is what one vendor's plugin hands a container for its devices.
type vendor struct {
	// idPrefix starts each device's ID (then node and index), as the vendor's IDs look.
	idPrefix string
	// env, when set, names the variable listing the allocated devices (by id or index).
	env      string
	envByIdx bool
	devices  func(i int) []string // the container paths of device i
	shared   []string             // container paths every allocation gets once
}

var vendors = map[string]vendor{
	"nvidia.com/gpu": {
		idPrefix: "GPU-fake",
		env:      "NVIDIA_VISIBLE_DEVICES",
		devices:  func(i int) []string { return []string{fmt.Sprintf("/dev/nvidia%d", i)} },
	},
	"amd.com/gpu": {
		idPrefix: "amdgpu-fake",
		devices: func(i int) []string {
			return []string{fmt.Sprintf("/dev/dri/card%d", i), fmt.Sprintf("/dev/dri/renderD%d", 128+i)}
		},
		shared: []string{"/dev/kfd"},
	},
	"habana.ai/gaudi": {
		idPrefix: "hl-fake",
		env:      "HABANA_VISIBLE_DEVICES",
		envByIdx: true,
		devices: func(i int) []string {
			return []string{fmt.Sprintf("/dev/accel/accel%d", i), fmt.Sprintf("/dev/accel/accel_controlD%d", i)}
		},
	},
}

// uuid is the fake ID of device i, unique per node as real ones are.
func (p *plugin) uuid(i int) string { return fmt.Sprintf("%s-%s-%d", p.vendor.idPrefix, p.node, i) }

func (p *plugin) devices() []*pluginapi.Device {
	devs := make([]*pluginapi.Device, p.count)
	for i := range devs {
		devs[i] = &pluginapi.Device{ID: p.uuid(i), Health: pluginapi.Healthy}
	}
	return devs
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices()}); err != nil {
		return err
	}
	// Fake devices never change health: hold the stream open until the kubelet closes it.
	<-stream.Context().Done()
	return nil
}

func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	node := func(path string) *pluginapi.DeviceSpec {
		return &pluginapi.DeviceSpec{HostPath: "/dev/null", ContainerPath: path, Permissions: "rw"}
	}
	for _, c := range req.ContainerRequests {
		car := &pluginapi.ContainerAllocateResponse{}
		for _, path := range p.vendor.shared {
			car.Devices = append(car.Devices, node(path))
		}
		var listed []string
		for _, id := range c.DevicesIds {
			var i int
			if _, err := fmt.Sscanf(id[strings.LastIndex(id, "-")+1:], "%d", &i); err != nil {
				return nil, fmt.Errorf("unknown device %q", id)
			}
			for _, path := range p.vendor.devices(i) {
				car.Devices = append(car.Devices, node(path))
			}
			if p.vendor.envByIdx {
				listed = append(listed, fmt.Sprint(i))
			} else {
				listed = append(listed, id)
			}
		}
		if p.vendor.env != "" {
			car.Envs = map[string]string{p.vendor.env: strings.Join(listed, ",")}
		}
		resp.ContainerResponses = append(resp.ContainerResponses, car)
	}
	return resp, nil
}

func (p *plugin) GetPreferredAllocation(context.Context, *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	return &pluginapi.PreferredAllocationResponse{}, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// serve listens on socket and registers resource with the kubelet; it returns once the
// socket is gone (the kubelet restarted), after stopping the server.
func serve(p *plugin, dir, resource string) error {
	// One socket per resource, so several plugins share the kubelet's directory.
	name := "fake-" + strings.NewReplacer("/", "_", ".", "_").Replace(resource) + ".sock"
	socket := filepath.Join(dir, name)
	_ = os.Remove(socket)
	lis, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", socket, err)
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "kubelet.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("kubelet socket: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     name,
		ResourceName: resource,
	})
	if err != nil {
		return fmt.Errorf("register %s with the kubelet: %w", resource, err)
	}
	log.Printf("registered %d x %s at %s", p.count, resource, socket)
	for {
		time.Sleep(time.Second)
		if _, err := os.Stat(socket); err != nil {
			log.Printf("%s is gone (kubelet restarted): registering again", socket)
			return nil
		}
	}
}

func main() {
	count := flag.Int("count", 4, "how many fake devices this node has")
	resource := flag.String("resource", "nvidia.com/gpu", "the resource to advertise: nvidia.com/gpu, amd.com/gpu or habana.ai/gaudi")
	dir := flag.String("dir", pluginapi.DevicePluginPath, "the kubelet's device-plugin directory")
	node := flag.String("node", "", "the node name, part of each fake GPU's UUID (default: hostname)")
	flag.Parse()
	if *node == "" {
		*node, _ = os.Hostname()
	}
	v, ok := vendors[*resource]
	if !ok {
		log.Fatalf("--resource %s: only nvidia.com/gpu, amd.com/gpu and habana.ai/gaudi are faked", *resource)
	}
	p := &plugin{node: *node, count: *count, vendor: v}
	for {
		if err := serve(p, *dir, *resource); err != nil {
			// The kubelet may not be up yet: retry, as real plugins do.
			log.Printf("%v; retrying in 1s", err)
			time.Sleep(time.Second)
		}
	}
}
