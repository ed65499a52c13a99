#include "vmm/cli.hpp"

#include <CLI/CLI.hpp>

#include <sstream>
#include <string_view>

#include "devices/vfio/group.hpp"
#include "vmm/sandbox/protocol.hpp"

namespace vmm::cli {
namespace {

constexpr int kUsageError = 2;
constexpr int kSandboxUsageError = sandbox::kStatusSandboxFailed;

// The `run` subcommand's flags, one line each (kvmtool's spelling where kvmtool has the flag).
struct RunOptions {
    VmConfig config;
    std::vector<std::string> disk_specs;
    std::vector<std::string> share_specs;
    std::string rootfs;
    std::string params;
    std::string console = "serial";
    CLI::Option* params_option = nullptr;
    std::string viommu;
    CLI::Option* viommu_option = nullptr;
    std::vector<std::string> network_specs;
    CLI::Option* network_option = nullptr;
};

// Digits only: CLI11 would otherwise wrap "-5" into a huge unsigned value.
CLI::Validator whole_number() {
    return CLI::Validator(
        [](std::string& value) -> std::string {
            bool digits = !value.empty() && value.find_first_not_of("0123456789") == std::string::npos;
            return digits ? std::string() : "'" + value + "' is not a whole number";
        },
        "");
}

void add_run_options(CLI::App& run, RunOptions& o) {
    VmConfig& c = o.config;
    run.add_option("-k,--kernel", c.kernel, "arm64 Linux Image to boot")->type_name("IMAGE")->required();
    run.add_option("-i,--initrd", c.initrd, "initial ramdisk")->type_name("FILE");
    o.params_option = run.add_option("-p,--params", o.params, "kernel command line (default: console=ttyS0 earlycon)")
                          ->type_name("CMDLINE");
    run.add_option("-c,--cpus", c.cpus, "number of vCPUs")->type_name("N")->capture_default_str()->check(whole_number());
    run.add_option("-m,--mem", c.mem_mib, "guest RAM in MiB")->type_name("MiB")->capture_default_str()->check(whole_number());
    run.add_option("-d,--disk", o.disk_specs, "virtio-blk disk image; ',ro' attaches it read-only (repeatable)")
        ->type_name("FILE[,ro]")
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    run.add_option("--9p", o.share_specs,
                   "share host directory DIR with the guest over virtio-9p (mount -t 9p -o trans=virtio TAG /mnt); "
                   "TAG defaults to DIR's base name; ',ro' refuses writes (repeatable)")
        ->type_name("DIR[,TAG][,ro]")
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    run.add_option("--rootfs", o.rootfs,
                   "boot with host directory DIR as the root file system over virtio-9p (tag /dev/root)")
        ->type_name("DIR");
    run.add_option("--console", o.console, "where the guest console and stdin go: the UART (ttyS0) or virtio-console (hvc0)")
        ->type_name("serial|virtio");
    run.add_flag("--rng", c.rng, "add a virtio-rng device");
    run.add_option("--vfio-pci", c.vfio_pci,
                   "assign host PCI function BDF (bound to vfio-pci) to the guest; repeatable")
        ->type_name("BDF")
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    o.viommu_option = run.add_option("--viommu", o.viommu,
                                     "put devices behind a virtio-iommu (guest-controlled DMA translation); "
                                     "alone: all devices, page_size=4K,bypass=1,input_bits=48")
                          ->type_name("[virtio|vfio|all][,page_size=4K|64K|MASK][,bypass=0|1][,input_range=S-E|input_bits=N][,poll=US]")
                          ->expected(0, 1);
    o.network_option = run.add_option("-n,--network", o.network_specs,
                   "a virtio-net NIC (repeatable); mode=user (default: libslirp, DHCP, DNS, no root), "
                   "tap (tapif=NAME, or a new tap as root) or none")
        ->type_name("[mode=user|tap|none][,tapif=NAME][,guest_mac=MAC][,host_ip=IP][,guest_ip=IP][,hostfwd=tcp:HP-GP]"
                    "[,host_loopback=on|off][,restrict=on|off]")
        ->expected(0, 1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    run.add_option("--name", c.name, "guest name (default: guest-<pid>)")->type_name("NAME");
    run.add_option("--dump-dtb", c.dump_dtb, "write the generated device tree to FILE and exit")->type_name("FILE");
    run.add_flag("--debug", c.debug, "log debug messages (memory map, devices, boot timings) to stderr");
    run.add_flag("--no-reboot", c.no_reboot, "exit when the guest reboots instead of rebooting it");
}

// "FILE" or "FILE,ro". Returns an error text, or empty.
std::string parse_disk(const std::string& spec, DiskConfig& disk) {
    std::size_t comma = spec.find(',');
    disk.path = spec.substr(0, comma);
    while (comma != std::string::npos) {
        std::size_t next = spec.find(',', comma + 1);
        std::string opt = spec.substr(comma + 1, next == std::string::npos ? std::string::npos : next - comma - 1);
        if (opt == "ro") disk.read_only = true;
        else if (opt == "rw") disk.read_only = false;
        else return "-d/--disk " + spec + ": unknown option '" + opt + "'; the only option is ',ro' (read-only)";
        comma = next;
    }
    if (disk.path.empty()) return "-d/--disk " + spec + ": no file name; use -d FILE or -d FILE,ro";
    return {};
}

// "DIR", "DIR,TAG", "DIR,ro", "DIR,TAG,ro". Returns an error text, or empty.
std::string parse_share(const std::string& spec, ShareConfig& share) {
    std::size_t comma = spec.find(',');
    share.dir = spec.substr(0, comma);
    bool tag_given = false;
    while (comma != std::string::npos) {
        std::size_t next = spec.find(',', comma + 1);
        std::string opt = spec.substr(comma + 1, next == std::string::npos ? std::string::npos : next - comma - 1);
        if (opt == "ro") share.read_only = true;
        else if (opt == "rw") share.read_only = false;
        else if (!tag_given && !opt.empty()) {
            share.tag = opt;
            tag_given = true;
        } else
            return "--9p " + spec + ": unexpected '" + opt + "'; use --9p DIR[,TAG][,ro]";
        comma = next;
    }
    if (share.dir.empty()) return "--9p " + spec + ": no directory; use --9p DIR[,TAG][,ro]";
    if (!tag_given) {
        // kvmtool's default: the directory's base name ("/" and "." have none worth using).
        std::string dir = share.dir;
        while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
        const std::size_t slash = dir.rfind('/');
        share.tag = slash == std::string::npos ? dir : dir.substr(slash + 1);
        if (share.tag.empty() || share.tag == "." || share.tag == "..")
            return "--9p " + spec + ": the directory has no base name to use as the tag; give one: --9p " + share.dir +
                   ",TAG";
    }
    return {};
}

Exit usage_error(const std::string& message, const std::string& hint_command, int code = kUsageError) {
    // One line: scripts and people both read the first line of an error.
    return Exit{code, "", "lkvm: error: " + message + " (see '" + hint_command + " --help')\n"};
}

// The run flags as a VmConfig (shared by run and sandbox), or the usage error with `code`.
std::variant<VmConfig, Exit> finish_config(RunOptions& options, const std::string& hint, int code) {
    VmConfig config = std::move(options.config);
    if (options.console == "serial") config.console = ConsoleKind::Serial;
    else if (options.console == "virtio") config.console = ConsoleKind::Virtio;
    else return usage_error("--console " + options.console + ": choose serial or virtio", hint, code);
    if (options.params_option->count() > 0) config.params = options.params;
    if (options.viommu_option->count() > 0) {
        ViommuConfig viommu;
        if (std::string error = parse_viommu(options.viommu, viommu); !error.empty())
            return usage_error(error, hint, code);
        config.viommu = viommu;
    }
    // A bare -n is mode=user with the defaults (CLI11 records it as an empty value, or not at all).
    if (options.network_specs.size() < options.network_option->count())
        options.network_specs.resize(options.network_option->count());
    for (const std::string& spec : options.network_specs) {
        NetConfig net;
        if (std::string error = parse_network(spec, net); !error.empty()) return usage_error(error, hint, code);
        config.nets.push_back(net);
    }
    // BDF syntax here, before any KVM or VFIO setup; whether the device exists is checked there.
    for (const std::string& bdf : config.vfio_pci)
        if (!devices::vfio::normalize_bdf(bdf))
            return usage_error("--vfio-pci " + bdf +
                                   ": not a PCI address; expected DDDD:BB:DD.F or BB:DD.F (hex, device 00-1f, "
                                   "function 0-7), e.g. 0000:01:00.0",
                               hint, code);
    for (const std::string& spec : options.disk_specs) {
        DiskConfig disk;
        if (std::string error = parse_disk(spec, disk); !error.empty()) return usage_error(error, hint, code);
        config.disks.push_back(disk);
    }
    if (!options.rootfs.empty()) config.shares.push_back({options.rootfs, std::string(kRootShareTag), false});
    for (const std::string& spec : options.share_specs) {
        ShareConfig share;
        if (std::string error = parse_share(spec, share); !error.empty()) return usage_error(error, hint, code);
        config.shares.push_back(share);
    }
    return config;
}

// `lkvm sandbox`: usage errors exit kSandboxUsageError, so that a status below 125 is always CMD's.
Command sandbox_request(RunOptions& options, std::string workdir, std::vector<std::string> argv) {
    const std::string hint = "lkvm sandbox";
    if (argv.empty())
        return usage_error("no command to run; put it after '--': lkvm sandbox -k IMAGE [flags] -- CMD [ARGS...]", hint,
                           kSandboxUsageError);
    if (workdir.empty()) return usage_error("--workdir: empty directory name", hint, kSandboxUsageError);
    auto config = finish_config(options, hint, kSandboxUsageError);
    if (auto* exit = std::get_if<Exit>(&config)) return *exit;
    // CMD is the code to contain: the host's loopback services (databases, agents, metadata
    // proxies that trust 127.0.0.1) stay out of its reach unless host_loopback=on is given.
    for (NetConfig& net : std::get<VmConfig>(config).nets)
        if (net.mode == NetMode::User && !net.host_loopback) net.host_loopback = false;
    return sandbox::Request{std::move(std::get<VmConfig>(config)), std::move(workdir), std::move(argv)};
}

}  // namespace

Command parse(int argc, const char* const* argv) {
    CLI::App app{"lkvm: a small KVM virtual machine monitor for arm64 Linux guests", "lkvm"};
    app.set_version_flag("--version", std::string("lkvm ") + kVersion);
    app.require_subcommand(1);
    app.fallthrough(false);

    // Subcommands, one line each.
    CLI::App* run = app.add_subcommand("run", "boot a guest: lkvm run -k Image [-i initrd] [-p cmdline] ...");
    CLI::App* sandbox = app.add_subcommand(
        "sandbox", "run CMD in a throwaway guest that sees the host's files: lkvm sandbox -k Image [-i initrd] -- CMD [ARGS...]");
    CLI::App* version = app.add_subcommand("version", "print lkvm's version");
    ControlCommand control;
    CLI::App* list = app.add_subcommand("list", "list the running guests: NAME PID STATE (removes stale sockets)");
    CLI::App* stop = app.add_subcommand("stop", "stop a running guest in order (as SIGTERM): lkvm stop NAME");
    CLI::App* stat = app.add_subcommand("stat", "show a guest's devices and vIOMMU counters: lkvm stat NAME");
    CLI::App* debug = app.add_subcommand(
        "debug", "lkvm debug NAME dump | fault EPID [read|write] [ADDRESS] | fail-next blkN|EPID [COUNT]");
    for (CLI::App* sub : {stop, stat, debug}) sub->add_option("name", control.name, "the guest's --name")->required();
    debug->add_option("command", control.words, "dump: IOMMU mappings; fault: report a fault on the virtio-iommu eventq; "
                                                "fail-next: fail the next COUNT requests of a disk")
        ->required();
    for (CLI::App* sub : {list, stop, stat, debug})
        sub->footer("Control sockets: $XDG_RUNTIME_DIR/lkvm/NAME.sock, else ~/.lkvm/NAME.sock (owner only).");

    RunOptions options;
    add_run_options(*run, options);
    run->footer(
        "The guest console is the 16550 UART at ttyS0 (and earlycon); -p defaults to\n"
        "\"console=ttyS0 earlycon\" (\"console=hvc0 earlycon\" with --console virtio).\n"
        "--viommu: the virtio-iommu is the first virtio-mmio device; the device in virtio-mmio\n"
        "slot i is endpoint 0x10000+i (iommus = <&viommu 0x10000+i>), PCI functions use their\n"
        "requester ID. Endpoints offer VIRTIO_F_ACCESS_PLATFORM; bypass=1 lets them DMA\n"
        "untranslated until the guest's driver attaches them (also the iommu.passthrough=1 path).\n"
        "poll=US: after a kick of its request queue a host thread serves the guest's MAP/UNMAP\n"
        "requests without further kicks (no VM exit each) until US microseconds pass idle; 0 = off.\n"
        "Ctrl-C stops the guest. A guest reboot restarts it unless --no-reboot.\n"
        "-n/--network: mode=user gives the guest 10.0.2.15 by DHCP behind a NAT gateway 10.0.2.2\n"
        "(DNS 10.0.2.3; the gateway is the host's 127.0.0.1 unless host_loopback=off, and\n"
        "restrict=on keeps the guest from reaching anything); hostfwd=tcp:HOSTPORT-GUESTPORT\n"
        "forwards 127.0.0.1:HOSTPORT into the guest (tcp:ADDR:HOSTPORT-GUESTPORT another address).\n"
        "--name NAME: `lkvm list`, `lkvm stop NAME`, `lkvm stat NAME`, `lkvm debug NAME ...` reach it.\n"
        "Exit status: 0 guest powered off (or rebooted with --no-reboot, or `lkvm stop`), 1 setup failure,\n"
        "2 usage error, 3 guest crash, 128+N stopped by signal N.");

    RunOptions sandbox_options;
    std::string sandbox_workdir = ".";
    add_run_options(*sandbox, sandbox_options);
    // The sandbox chooses the consoles and the root itself, never reboots, and always boots.
    for (const char* flag : {"--console", "--rootfs", "--no-reboot", "--dump-dtb"})
        sandbox->remove_option(sandbox->get_option(flag));
    sandbox->get_option("--params")->description("added to the sandbox's kernel command line (see below)");
    sandbox->add_option("--workdir", sandbox_workdir,
                        "host directory shared read-write at the same path; CMD's working directory")
        ->type_name("DIR")
        ->capture_default_str();
    sandbox->footer(
        "Boots IMAGE with lkvm's own init (appended to -i's initrd, which must hold the kernel's\n"
        "virtio_mmio, 9p and 9pnet_virtio modules under /lib/modules/RELEASE unless they are built\n"
        "in), runs CMD in the guest and powers it off. The guest sees the host's / read-only (the\n"
        "host's binaries: an arm64 host), --workdir read-write at its own path (CMD starts there),\n"
        "a fresh tmpfs on /tmp, its own /proc, /sys and /dev; PATH=/usr/local/sbin:/usr/local/bin:\n"
        "/usr/sbin:/usr/bin:/sbin:/bin, HOME=/tmp, TERM=dumb, stdin /dev/null. CMD's stdout is\n"
        "lkvm's stdout (virtio-console), its stderr and the kernel's messages are lkvm's stderr\n"
        "(UART). -p adds to \"console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/lkvm-init\".\n"
        "Exit status: CMD's own (0-255); 128+N when CMD was killed by signal N; 127 CMD not\n"
        "found, 126 not executable (as shells); 125 the sandbox failed: a usage error, a setup\n"
        "failure, or a guest that crashed or ended without reporting CMD's status. When lkvm\n"
        "itself is stopped by signal N (Ctrl-C, SIGTERM): 128+N.");

    // Everything after the first `--` of `lkvm sandbox` is CMD: it is never parsed as flags.
    std::vector<std::string> sandbox_argv;
    if (argc > 2 && std::string_view(argv[1]) == "sandbox") {
        for (int i = 2; i < argc; ++i) {
            if (std::string_view(argv[i]) != "--") continue;
            sandbox_argv.assign(argv + i + 1, argv + argc);
            argc = i;
            break;
        }
    }

    if (argc <= 1) return Exit{kUsageError, "", app.help()};
    // CLI11 would report a mistyped command as "a subcommand is required"; name it instead.
    if (std::string first = argv[1]; !first.empty() && first[0] != '-') {
        std::string known;
        bool found = false;
        for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
            known += (known.empty() ? "" : ", ") + sub->get_name();
            found = found || sub->check_name(first);
        }
        if (!found) return usage_error("unknown command '" + first + "'; the commands are: " + known, "lkvm");
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
        return Exit{0, app.help(), ""};
    } catch (const CLI::CallForAllHelp&) {
        return Exit{0, app.help("", CLI::AppFormatMode::All), ""};
    } catch (const CLI::CallForVersion&) {
        return Exit{0, std::string("lkvm ") + kVersion + "\n", ""};
    } catch (const CLI::ParseError& e) {
        if (sandbox->parsed()) {
            // Without `--`, CMD's words reach the flag parser: say where they belong.
            const std::string hint = sandbox_argv.empty() ? "; put CMD after '--': lkvm sandbox -k IMAGE [flags] -- CMD [ARGS...]" : "";
            return usage_error(e.what() + hint, "lkvm sandbox", kSandboxUsageError);
        }
        std::string hint = "lkvm";
        for (const CLI::App* sub : {run, list, stop, stat, debug})
            if (sub->parsed()) hint += " " + sub->get_name();
        return usage_error(e.what(), hint);
    }

    if (version->parsed()) return Exit{0, std::string("lkvm ") + kVersion + "\n", ""};
    if (list->parsed()) return ControlCommand{ControlCommand::Kind::List, "", {}};
    if (stop->parsed()) control.kind = ControlCommand::Kind::Stop;
    if (stat->parsed()) control.kind = ControlCommand::Kind::Stat;
    if (debug->parsed()) control.kind = ControlCommand::Kind::Debug;
    if (stop->parsed() || stat->parsed() || debug->parsed()) return control;

    if (sandbox->parsed()) return sandbox_request(sandbox_options, std::move(sandbox_workdir), std::move(sandbox_argv));
    auto config = finish_config(options, "lkvm run", kUsageError);
    if (auto* exit = std::get_if<Exit>(&config)) return *exit;
    return Run{std::move(std::get<VmConfig>(config))};
}

}  // namespace vmm::cli
