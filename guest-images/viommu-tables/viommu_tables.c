// SPDX-License-Identifier: GPL-2.0
/*
 * viommu_tables: a virtio-iommu driver for lkvm's page-table handover.
 *
 * The standard virtio-iommu driver (drivers/iommu/virtio-iommu.c) describes every DMA mapping to
 * the device with a MAP request and every removal with an UNMAP request (virtio 1.2 section 5.13).
 * This driver builds ordinary Arm stage-1 tables with the kernel's io-pgtable library instead,
 * hands their root to the device once per domain (ATTACH_TABLE) and afterwards only tells it
 * which cached translations to drop (INVALIDATE). Mapping costs no request at all; unmapping one
 * INVALIDATE per iotlb_sync in strict mode, and one per flush-queue batch in lazy mode.
 *
 * The wire format and its rules are lkvm's own, described in iommu/page_tables.md of the lkvm
 * tree and laid out in iommu/uapi/virtio_iommu_tables.h, which this file includes unchanged.
 *
 * The driver only loads when a virtio-mmio virtio-iommu in the device tree offers
 * LKVM_VIOMMU_F_ATTACH_TABLE (see vt_some_device_offers_tables()), so that without the feature
 * the stock virtio_iommu module can take the device: a virtio driver cannot decline a device
 * after the virtio core started negotiating with it (drivers/virtio/virtio.c marks it FAILED and
 * does not reset it, and the next driver's negotiation is then refused).
 *
 * debugfs (/sys/kernel/debug/viommu_tables/): per IOMMU `stats` (requests sent, faults seen);
 * per endpoint `revoke`: writing N makes the next N device-writable mappings of the endpoint's
 * domain disappear from the table (with an INVALIDATE) right after they were made, while the DMA
 * API still believes them mapped, so that a test can check that the device faults instead of
 * reaching memory through a translation the guest removed.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/io-pgtable.h>
#include <linux/iommu.h>
#include <linux/module.h>
#include <linux/of.h>
#include <linux/of_address.h>
#include <linux/pci.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <uapi/linux/virtio_mmio.h>

#include "virtio_iommu_tables.h"

/* Where MSIs are mapped when the device reserves no MSI window (as the stock driver does). */
#define VT_SW_MSI_BASE 0x8000000
#define VT_SW_MSI_SIZE 0x100000
#define VT_MAX_PROBE_SIZE SZ_64K
#define VT_MAX_REVOKED 8

/* TCR_EL1 fields the device reads (Arm ARM D19.2 "TCR_EL1"; iommu/page_tables.md). */
#define VT_TCR_T0SZ(x) ((u64)(x) & 0x3f)
#define VT_TCR_IRGN0(x) (((u64)(x) & 3) << 8)
#define VT_TCR_ORGN0(x) (((u64)(x) & 3) << 10)
#define VT_TCR_SH0(x) (((u64)(x) & 3) << 12)
#define VT_TCR_TG0(x) (((u64)(x) & 3) << 14)
#define VT_TCR_EPD1 BIT_ULL(23)
#define VT_TCR_IPS(x) (((u64)(x) & 7) << 32)
#define VT_TCR_AS BIT_ULL(36)
#define VT_TCR_HPD0 BIT_ULL(41)

struct vt_counters {
	atomic64_t attach_table, invalidate_range, invalidate_asid, invalidate_domain, faults, revoked;
	atomic64_t last_fault;
};

/* One virtio-iommu device. */
struct vt_dev {
	struct iommu_device iommu;
	struct virtio_device *vdev;
	struct list_head node; /* in vt_devices */
	struct virtqueue *req_vq, *evt_vq;
	spinlock_t req_lock;   /* req_buf and the request queue */
	void *req_buf;         /* every request is copied here and sent synchronously */
	size_t req_buf_len;
	struct virtio_iommu_fault *events;
	struct ida domain_ids, asids;
	u32 first_domain, last_domain, identity_id, probe_size;
	u64 input_start, input_end;
	bool bypass;           /* BYPASS_CONFIG negotiated: identity domains attach with F_BYPASS */
	struct dentry *dbg;
	struct vt_counters n;
};

/* One address space: an io-pgtable stage-1 table, an ASID and a device domain ID. */
struct vt_domain {
	struct iommu_domain domain;
	struct vt_dev *vt;
	struct io_pgtable_ops *pgtbl;
	u32 id;
	u16 asid;
	bool shadow;           /* the endpoint asked for INVALIDATE after new mappings too */
	u64 tcr, ttbr, mair;
	atomic_t nr_endpoints; /* the device knows the domain only while this is non-zero */
	spinlock_t revoke_lock;
	unsigned int revoke_next, nr_revoked;
	struct vt_revoked {
		unsigned long iova;
		size_t size;
		phys_addr_t paddr;
	} revoked[VT_MAX_REVOKED];
};

struct vt_endpoint {
	struct device *dev;
	struct vt_dev *vt;
	struct vt_domain *domain; /* attached paging domain, NULL for none or identity */
	bool attached;
	u32 attached_id;
	struct list_head resv_regions;
	u8 asid_bits;
	unsigned int ias, oas;
	u64 pgsize_bitmap, table_flags;
	struct dentry *dbg;
};

static LIST_HEAD(vt_devices);
static DEFINE_MUTEX(vt_devices_lock);
static struct dentry *vt_debugfs;
static const struct iommu_ops vt_ops;
static const struct iommu_domain_ops vt_domain_ops;

static inline struct vt_domain *to_vt_domain(struct iommu_domain *d)
{
	return container_of(d, struct vt_domain, domain);
}

/* --- requests --------------------------------------------------------------------------------- */

static int vt_status_errno(u8 status)
{
	switch (status) {
	case VIRTIO_IOMMU_S_OK: return 0;
	case VIRTIO_IOMMU_S_UNSUPP: return -EOPNOTSUPP;
	case VIRTIO_IOMMU_S_INVAL: return -EINVAL;
	case VIRTIO_IOMMU_S_RANGE: return -ERANGE;
	case VIRTIO_IOMMU_S_NOENT: return -ENOENT;
	case VIRTIO_IOMMU_S_FAULT: return -EFAULT;
	case VIRTIO_IOMMU_S_NOMEM: return -ENOMEM;
	default: return -EIO;
	}
}

/*
 * Send one request and wait for it (virtio 1.2 section 5.13.6: the device-readable part is
 * followed by the device-writable part, which ends with the status tail). The writable part is
 * copied back into @req. Usable in atomic context: INVALIDATE is sent from unmap paths.
 */
static int vt_send(struct vt_dev *vt, void *req, size_t len, size_t writable)
{
	struct scatterlist out, in, *sgs[2] = { &out, &in };
	size_t readable = len - writable;
	struct virtio_iommu_req_tail *tail;
	unsigned long flags;
	unsigned int used;
	int ret;

	if (WARN_ON(len > vt->req_buf_len || writable < sizeof(*tail) || writable > len))
		return -EINVAL;
	spin_lock_irqsave(&vt->req_lock, flags);
	memcpy(vt->req_buf, req, readable);
	memset(vt->req_buf + readable, 0, writable);
	sg_init_one(&out, vt->req_buf, readable);
	sg_init_one(&in, vt->req_buf + readable, writable);
	ret = virtqueue_add_sgs(vt->req_vq, sgs, 1, 1, vt->req_buf, GFP_ATOMIC);
	if (ret)
		goto out;
	virtqueue_kick(vt->req_vq);
	while (!virtqueue_get_buf(vt->req_vq, &used)) {
		if (virtqueue_is_broken(vt->req_vq)) {
			ret = -EIO;
			goto out;
		}
		cpu_relax();
	}
	tail = vt->req_buf + len - sizeof(*tail);
	ret = used ? vt_status_errno(tail->status) : -EIO;
	memcpy(req + readable, vt->req_buf + readable, writable);
out:
	spin_unlock_irqrestore(&vt->req_lock, flags);
	return ret;
}

#define vt_send_req(vt, req) vt_send(vt, req, sizeof(*(req)), sizeof((req)->tail))

/*
 * INVALIDATE (iommu/page_tables.md "INVALIDATE"). A domain no endpoint is attached to does not
 * exist in the device (the last DETACH destroyed it with everything cached), so there is nothing
 * to invalidate.
 */
static void vt_invalidate(struct vt_domain *dom, u16 scope, unsigned long iova, u64 nr_pages,
			  unsigned int granule_shift, bool leaf)
{
	struct lkvm_viommu_req_invalidate req = {
		.head.type = LKVM_VIOMMU_T_INVALIDATE,
		.scope = cpu_to_le16(scope),
		.caches = cpu_to_le16(LKVM_VIOMMU_INV_CACHE_IOTLB),
		.domain = cpu_to_le32(dom->id),
	};
	u16 flags = 0;
	int ret;

	if (!atomic_read(&dom->nr_endpoints))
		return;
	if (scope != LKVM_VIOMMU_INV_DOMAIN) {
		flags |= LKVM_VIOMMU_INV_F_ASID;
		req.asid = cpu_to_le64(dom->asid);
	}
	if (scope == LKVM_VIOMMU_INV_RANGE) {
		req.virt_start = cpu_to_le64(iova);
		req.nr_pages = cpu_to_le64(nr_pages);
		req.granule = granule_shift;
		if (leaf)
			flags |= LKVM_VIOMMU_INV_F_LEAF;
	}
	req.flags = cpu_to_le16(flags);
	ret = vt_send_req(dom->vt, &req);
	if (ret)
		dev_err_ratelimited(&dom->vt->vdev->dev, "INVALIDATE (scope %u) of domain %u failed: %d\n",
				    scope, dom->id, ret);
	atomic64_inc(scope == LKVM_VIOMMU_INV_RANGE ? &dom->vt->n.invalidate_range :
		     scope == LKVM_VIOMMU_INV_ASID ? &dom->vt->n.invalidate_asid :
						      &dom->vt->n.invalidate_domain);
}

static void vt_invalidate_range(struct vt_domain *dom, unsigned long iova, size_t size,
				size_t granule, bool leaf)
{
	unsigned long start = ALIGN_DOWN(iova, granule);

	vt_invalidate(dom, LKVM_VIOMMU_INV_RANGE, start, DIV_ROUND_UP(iova + size - start, granule),
		      __ffs(granule), leaf);
}

/* --- io-pgtable callbacks: what the library changed in the table, turned into INVALIDATE ------ */

static void vt_tlb_flush_all(void *cookie)
{
	vt_invalidate(cookie, LKVM_VIOMMU_INV_DOMAIN, 0, 0, 0, false);
}

/* A table (not only leaves) went away under [iova, iova + size): walk caches must drop it too. */
static void vt_tlb_flush_walk(unsigned long iova, size_t size, size_t granule, void *cookie)
{
	vt_invalidate_range(cookie, iova, size, granule, false);
}

/* A leaf went away: collect it into the gather, sent as one range by vt_iotlb_sync(). */
static void vt_tlb_add_page(struct iommu_iotlb_gather *gather, unsigned long iova, size_t granule,
			    void *cookie)
{
	struct vt_domain *dom = cookie;

	iommu_iotlb_gather_add_page(&dom->domain, gather, iova, granule);
}

static const struct iommu_flush_ops vt_flush_ops = {
	.tlb_flush_all = vt_tlb_flush_all,
	.tlb_flush_walk = vt_tlb_flush_walk,
	.tlb_add_page = vt_tlb_add_page,
};

/* --- domains ---------------------------------------------------------------------------------- */

static struct iommu_domain *vt_domain_alloc_paging(struct device *dev)
{
	struct vt_endpoint *ep = dev ? dev_iommu_priv_get(dev) : NULL;
	struct io_pgtable_cfg cfg = {
		.coherent_walk = true, /* the device reads the tables through the CPU caches */
		.tlb = &vt_flush_ops,
	};
	struct vt_domain *dom;
	struct vt_dev *vt;
	int ret;

	if (!ep)
		return ERR_PTR(-ENODEV); /* the table format is the endpoint's */
	vt = ep->vt;
	cfg.pgsize_bitmap = ep->pgsize_bitmap;
	cfg.ias = ep->ias;
	cfg.oas = ep->oas;
	cfg.iommu_dev = vt->vdev->dev.parent;
	dom = kzalloc(sizeof(*dom), GFP_KERNEL);
	if (!dom)
		return ERR_PTR(-ENOMEM);
	dom->vt = vt;
	spin_lock_init(&dom->revoke_lock);
	ret = ida_alloc_range(&vt->domain_ids, vt->first_domain, vt->last_domain, GFP_KERNEL);
	if (ret < 0)
		goto err_free;
	dom->id = ret;
	ret = ida_alloc_range(&vt->asids, 1, (1U << ep->asid_bits) - 1, GFP_KERNEL);
	if (ret < 0)
		goto err_id;
	dom->asid = ret;
	dom->pgtbl = alloc_io_pgtable_ops(ARM_64_LPAE_S1, &cfg, dom);
	if (!dom->pgtbl) {
		ret = -ENOMEM;
		goto err_asid;
	}
	/* The stage-1 context of iommu/page_tables.md "ATTACH_TABLE fields"; TTBR1 is unused. */
	dom->tcr = VT_TCR_T0SZ(cfg.arm_lpae_s1_cfg.tcr.tsz) | VT_TCR_IRGN0(cfg.arm_lpae_s1_cfg.tcr.irgn) |
		   VT_TCR_ORGN0(cfg.arm_lpae_s1_cfg.tcr.orgn) | VT_TCR_SH0(cfg.arm_lpae_s1_cfg.tcr.sh) |
		   VT_TCR_TG0(cfg.arm_lpae_s1_cfg.tcr.tg) | VT_TCR_EPD1 |
		   VT_TCR_IPS(cfg.arm_lpae_s1_cfg.tcr.ips) | VT_TCR_HPD0 |
		   (ep->asid_bits == 16 ? VT_TCR_AS : 0);
	dom->ttbr = cfg.arm_lpae_s1_cfg.ttbr;
	dom->mair = cfg.arm_lpae_s1_cfg.mair;
	dom->shadow = ep->table_flags & LKVM_VIOMMU_TABLE_F_SHADOW;
	dom->domain.ops = &vt_domain_ops;
	dom->domain.pgsize_bitmap = cfg.pgsize_bitmap;
	dom->domain.geometry.aperture_start = vt->input_start;
	dom->domain.geometry.aperture_end = min_t(u64, vt->input_end, BIT_ULL(cfg.ias) - 1);
	dom->domain.geometry.force_aperture = true;
	return &dom->domain;

err_asid:
	ida_free(&vt->asids, dom->asid);
err_id:
	ida_free(&vt->domain_ids, dom->id);
err_free:
	kfree(dom);
	return ERR_PTR(ret);
}

static void vt_domain_free(struct iommu_domain *domain)
{
	struct vt_domain *dom = to_vt_domain(domain);

	free_io_pgtable_ops(dom->pgtbl);
	ida_free(&dom->vt->asids, dom->asid);
	ida_free(&dom->vt->domain_ids, dom->id);
	kfree(dom);
}

/* The endpoint now belongs to @dom (NULL: to the identity domain); the device moved it already. */
static void vt_endpoint_moved(struct vt_endpoint *ep, struct vt_domain *dom, u32 id)
{
	if (ep->domain)
		atomic_dec(&ep->domain->nr_endpoints);
	if (dom)
		atomic_inc(&dom->nr_endpoints);
	ep->domain = dom;
	ep->attached = true;
	ep->attached_id = id;
}

static int vt_attach_dev(struct iommu_domain *domain, struct device *dev)
{
	struct iommu_fwspec *fwspec = dev_iommu_fwspec_get(dev);
	struct vt_endpoint *ep = dev_iommu_priv_get(dev);
	struct vt_domain *dom = to_vt_domain(domain);
	struct lkvm_viommu_req_attach_table req = {
		.head.type = LKVM_VIOMMU_T_ATTACH_TABLE,
		.domain = cpu_to_le32(dom->id),
		.format = cpu_to_le16(LKVM_VIOMMU_FMT_ARM_LPAE_S1),
		.asid = cpu_to_le16(dom->asid),
		.tcr = cpu_to_le64(dom->tcr),
		.ttbr = cpu_to_le64(dom->ttbr),
		.mair = cpu_to_le64(dom->mair),
	};
	int i, ret;

	if (dom->vt != ep->vt)
		return -EINVAL;
	for (i = 0; i < fwspec->num_ids; i++) {
		req.endpoint = cpu_to_le32(fwspec->ids[i]);
		ret = vt_send_req(dom->vt, &req);
		atomic64_inc(&dom->vt->n.attach_table);
		if (ret) {
			dev_err(dev, "ATTACH_TABLE of endpoint %u to domain %u failed: %d\n",
				fwspec->ids[i], dom->id, ret);
			return ret;
		}
	}
	vt_endpoint_moved(ep, dom, dom->id);
	return 0;
}

/* Identity: the device's bypass domain (virtio 1.2 section 5.13.6.4, ATTACH_F_BYPASS). */
static int vt_attach_identity(struct iommu_domain *domain, struct device *dev)
{
	struct iommu_fwspec *fwspec = dev_iommu_fwspec_get(dev);
	struct vt_endpoint *ep = dev_iommu_priv_get(dev);
	struct virtio_iommu_req_attach req = {
		.head.type = VIRTIO_IOMMU_T_ATTACH,
		.domain = cpu_to_le32(ep->vt->identity_id),
		.flags = cpu_to_le32(VIRTIO_IOMMU_ATTACH_F_BYPASS),
	};
	int i, ret;

	if (!ep->vt->bypass)
		return -EOPNOTSUPP;
	for (i = 0; i < fwspec->num_ids; i++) {
		req.endpoint = cpu_to_le32(fwspec->ids[i]);
		ret = vt_send_req(ep->vt, &req);
		if (ret)
			return ret;
	}
	vt_endpoint_moved(ep, NULL, ep->vt->identity_id);
	return 0;
}

static struct iommu_domain vt_identity_domain = {
	.type = IOMMU_DOMAIN_IDENTITY,
	.ops = &(const struct iommu_domain_ops){ .attach_dev = vt_attach_identity },
};

static void vt_detach(struct vt_endpoint *ep)
{
	struct iommu_fwspec *fwspec = dev_iommu_fwspec_get(ep->dev);
	struct virtio_iommu_req_detach req = {
		.head.type = VIRTIO_IOMMU_T_DETACH,
		.domain = cpu_to_le32(ep->attached_id),
	};
	int i;

	if (!ep->attached)
		return;
	for (i = 0; i < fwspec->num_ids; i++) {
		req.endpoint = cpu_to_le32(fwspec->ids[i]);
		WARN_ON(vt_send_req(ep->vt, &req));
	}
	if (ep->domain)
		atomic_dec(&ep->domain->nr_endpoints);
	ep->domain = NULL;
	ep->attached = false;
}

/*
 * The test hook behind debugfs `revoke`: the mapping just made is taken out of the table again and
 * invalidated, and remembered so that the DMA API's later unmap of it (which looks the address up
 * first: drivers/iommu/dma-iommu.c) succeeds without touching the table.
 */
static void vt_maybe_revoke(struct vt_domain *dom, unsigned long iova, phys_addr_t paddr,
			    size_t pgsize, size_t pgcount, int prot)
{
	struct iommu_iotlb_gather gather;
	unsigned long flags;
	bool revoke = false;

	if (!(prot & IOMMU_WRITE) || (prot & IOMMU_READ))
		return; /* only buffers the device writes: never a request header or a ring */
	spin_lock_irqsave(&dom->revoke_lock, flags);
	if (dom->revoke_next && dom->nr_revoked < VT_MAX_REVOKED) {
		dom->revoke_next--;
		dom->revoked[dom->nr_revoked++] = (struct vt_revoked){ iova, pgsize * pgcount, paddr };
		revoke = true;
	}
	spin_unlock_irqrestore(&dom->revoke_lock, flags);
	if (!revoke)
		return;
	iommu_iotlb_gather_init(&gather);
	dom->pgtbl->unmap_pages(dom->pgtbl, iova, pgsize, pgcount, &gather);
	if (gather.pgsize)
		vt_invalidate_range(dom, gather.start, gather.end - gather.start + 1, gather.pgsize, true);
	atomic64_inc(&dom->vt->n.revoked);
	dev_info(&dom->vt->vdev->dev, "revoked IOVA %#lx-%#lx of domain %u (test hook)\n", iova,
		 iova + pgsize * pgcount - 1, dom->id);
}

/*
 * Whether [iova, iova + size) lies in a revoked mapping (that part is not in the table);
 * @paddr gets what it mapped @iova to, @forget drops a mapping unmapped as a whole.
 */
static bool vt_revoked(struct vt_domain *dom, unsigned long iova, size_t size, phys_addr_t *paddr,
		       bool forget)
{
	unsigned long flags;
	bool found = false;
	unsigned int i;

	spin_lock_irqsave(&dom->revoke_lock, flags);
	for (i = 0; i < dom->nr_revoked; i++) {
		struct vt_revoked *r = &dom->revoked[i];

		if (iova < r->iova || iova + size > r->iova + r->size)
			continue;
		found = true;
		if (paddr)
			*paddr = r->paddr + (iova - r->iova);
		if (forget && iova == r->iova && size == r->size)
			*r = dom->revoked[--dom->nr_revoked];
		break;
	}
	spin_unlock_irqrestore(&dom->revoke_lock, flags);
	return found;
}

static int vt_map_pages(struct iommu_domain *domain, unsigned long iova, phys_addr_t paddr,
			size_t pgsize, size_t pgcount, int prot, gfp_t gfp, size_t *mapped)
{
	struct vt_domain *dom = to_vt_domain(domain);
	int ret;

	ret = dom->pgtbl->map_pages(dom->pgtbl, iova, paddr, pgsize, pgcount, prot, gfp, mapped);
	if (!ret && unlikely(READ_ONCE(dom->revoke_next)))
		vt_maybe_revoke(dom, iova, paddr, pgsize, pgcount, prot);
	return ret;
}

static size_t vt_unmap_pages(struct iommu_domain *domain, unsigned long iova, size_t pgsize,
			     size_t pgcount, struct iommu_iotlb_gather *gather)
{
	struct vt_domain *dom = to_vt_domain(domain);

	if (unlikely(READ_ONCE(dom->nr_revoked)) && vt_revoked(dom, iova, pgsize * pgcount, NULL, true))
		return pgsize * pgcount;
	return dom->pgtbl->unmap_pages(dom->pgtbl, iova, pgsize, pgcount, gather);
}

static phys_addr_t vt_iova_to_phys(struct iommu_domain *domain, dma_addr_t iova)
{
	struct vt_domain *dom = to_vt_domain(domain);
	phys_addr_t paddr;

	if (unlikely(READ_ONCE(dom->nr_revoked)) && vt_revoked(dom, iova, 1, &paddr, false))
		return paddr;
	return dom->pgtbl->iova_to_phys(dom->pgtbl, iova);
}

/* Strict mode: the leaves removed since the gather started, as one INVALIDATE. */
static void vt_iotlb_sync(struct iommu_domain *domain, struct iommu_iotlb_gather *gather)
{
	if (!gather->pgsize || gather->end < gather->start)
		return;
	vt_invalidate_range(to_vt_domain(domain), gather->start, gather->end - gather->start + 1,
			    gather->pgsize, true);
}

/*
 * New mappings need no request, unless the endpoint's tables are shadowed (TABLE_F_SHADOW). A
 * range the host could not map is logged (and reported on the event queue) but does not fail the
 * mapping: the device's DMA to it then fails and its driver sees an I/O error. Failing the mapping
 * instead makes drivers that treat it as a lack of resources (nvme: BLK_STS_RESOURCE) retry a
 * request that can never fit the host's budget forever.
 */
static int vt_iotlb_sync_map(struct iommu_domain *domain, unsigned long iova, size_t size)
{
	struct vt_domain *dom = to_vt_domain(domain);

	if (dom->shadow)
		vt_invalidate_range(dom, iova, size, 1UL << __ffs(domain->pgsize_bitmap), true);
	return 0;
}

/* Lazy mode's flush queue and explicit flushes: every entry of the domain's ASID. */
static void vt_flush_iotlb_all(struct iommu_domain *domain)
{
	vt_invalidate(to_vt_domain(domain), LKVM_VIOMMU_INV_ASID, 0, 0, 0, false);
}

static const struct iommu_domain_ops vt_domain_ops = {
	.attach_dev = vt_attach_dev,
	.map_pages = vt_map_pages,
	.unmap_pages = vt_unmap_pages,
	.iova_to_phys = vt_iova_to_phys,
	.iotlb_sync = vt_iotlb_sync,
	.iotlb_sync_map = vt_iotlb_sync_map,
	.flush_iotlb_all = vt_flush_iotlb_all,
	.free = vt_domain_free,
};

/* --- endpoints -------------------------------------------------------------------------------- */

static int vt_add_resv_mem(struct vt_endpoint *ep, struct virtio_iommu_probe_resv_mem *mem,
			   size_t len)
{
	int prot = IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_MMIO;
	u64 start = le64_to_cpu(mem->start), end = le64_to_cpu(mem->end);
	struct iommu_resv_region *region;

	if (len < sizeof(*mem) || end < start || end - start == U64_MAX)
		return -EINVAL;
	if (mem->subtype == VIRTIO_IOMMU_RESV_MEM_T_MSI)
		region = iommu_alloc_resv_region(start, end - start + 1, prot, IOMMU_RESV_MSI,
						 GFP_KERNEL);
	else
		region = iommu_alloc_resv_region(start, end - start + 1, 0, IOMMU_RESV_RESERVED,
						 GFP_KERNEL);
	if (!region)
		return -ENOMEM;
	list_add_tail(&region->list, &ep->resv_regions);
	return 0;
}

/* The TABLE_FORMAT property (iommu/page_tables.md "Negotiation"): what this endpoint can walk. */
static int vt_set_table_format(struct vt_endpoint *ep, struct lkvm_viommu_probe_table_format *fmt,
			       size_t len)
{
	static const unsigned int oas_steps[] = { 32, 36, 40, 42, 44, 48 };
	u64 pgsizes = le64_to_cpu(fmt->pgsize_bitmap);
	unsigned int i;

	if (len < sizeof(*fmt) || le16_to_cpu(fmt->format) != LKVM_VIOMMU_FMT_ARM_LPAE_S1)
		return -EINVAL;
	if ((fmt->asid_bits != 8 && fmt->asid_bits != 16) || fmt->input_bits < 25 ||
	    fmt->output_bits < 32 || !(pgsizes & PAGE_SIZE))
		return -EINVAL;
	ep->asid_bits = fmt->asid_bits;
	ep->ias = min_t(unsigned int, fmt->input_bits, 48);
	/* io-pgtable takes the IPS encodings only; round down to one (never past the device). */
	ep->oas = 0;
	for (i = 0; i < ARRAY_SIZE(oas_steps); i++)
		if (oas_steps[i] <= fmt->output_bits)
			ep->oas = oas_steps[i];
	ep->pgsize_bitmap = pgsizes;
	ep->table_flags = le64_to_cpu(fmt->flags);
	return 0;
}

static int vt_probe_endpoint(struct vt_endpoint *ep, u32 id)
{
	struct vt_dev *vt = ep->vt;
	size_t len = sizeof(struct virtio_iommu_req_probe) + vt->probe_size +
		     sizeof(struct virtio_iommu_req_tail);
	struct virtio_iommu_req_probe *req;
	size_t cur = 0;
	int ret;

	req = kzalloc(len, GFP_KERNEL);
	if (!req)
		return -ENOMEM;
	req->head.type = VIRTIO_IOMMU_T_PROBE;
	req->endpoint = cpu_to_le32(id);
	ret = vt_send(vt, req, len, vt->probe_size + sizeof(struct virtio_iommu_req_tail));
	if (ret)
		goto out;
	/* Properties until T_NONE or the end of probe_size (virtio 1.2 section 5.13.6.8). */
	while (cur + sizeof(struct virtio_iommu_probe_property) <= vt->probe_size) {
		struct virtio_iommu_probe_property *prop = (void *)req->properties + cur;
		u16 type = le16_to_cpu(prop->type) & VIRTIO_IOMMU_PROBE_T_MASK;
		size_t plen = sizeof(*prop) + le16_to_cpu(prop->length);

		if (type == VIRTIO_IOMMU_PROBE_T_NONE)
			break;
		if (cur + plen > vt->probe_size) {
			ret = -EINVAL;
			break;
		}
		if (type == VIRTIO_IOMMU_PROBE_T_RESV_MEM)
			ret = vt_add_resv_mem(ep, (void *)prop, plen);
		else if (type == LKVM_VIOMMU_PROBE_T_TABLE_FORMAT)
			ret = vt_set_table_format(ep, (void *)prop, plen);
		if (ret)
			break;
		cur += plen;
	}
out:
	kfree(req);
	return ret;
}

static int vt_revoke_get(void *data, u64 *val)
{
	struct vt_endpoint *ep = data;
	struct vt_domain *dom = READ_ONCE(ep->domain);

	*val = dom ? READ_ONCE(dom->revoke_next) : 0;
	return 0;
}

static int vt_revoke_set(void *data, u64 val)
{
	struct vt_endpoint *ep = data;
	struct vt_domain *dom = READ_ONCE(ep->domain);

	if (!dom || val > VT_MAX_REVOKED)
		return -EINVAL;
	WRITE_ONCE(dom->revoke_next, val);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(vt_revoke_fops, vt_revoke_get, vt_revoke_set, "%llu\n");

static struct vt_dev *vt_find(struct fwnode_handle *fwnode)
{
	struct vt_dev *vt, *found = NULL;

	mutex_lock(&vt_devices_lock);
	list_for_each_entry(vt, &vt_devices, node)
		if (device_match_fwnode(vt->vdev->dev.parent, fwnode))
			found = vt;
	mutex_unlock(&vt_devices_lock);
	return found;
}

static struct iommu_device *vt_probe_device(struct device *dev)
{
	struct iommu_fwspec *fwspec = dev_iommu_fwspec_get(dev);
	struct vt_endpoint *ep;
	struct vt_dev *vt;
	int ret;

	if (!fwspec || !fwspec->num_ids)
		return ERR_PTR(-ENODEV);
	vt = vt_find(fwspec->iommu_fwnode);
	if (!vt)
		return ERR_PTR(-ENODEV);
	ep = kzalloc(sizeof(*ep), GFP_KERNEL);
	if (!ep)
		return ERR_PTR(-ENOMEM);
	ep->dev = dev;
	ep->vt = vt;
	INIT_LIST_HEAD(&ep->resv_regions);
	ret = vt_probe_endpoint(ep, fwspec->ids[0]);
	if (!ret && !ep->ias) {
		dev_err(dev, "endpoint %u has no usable TABLE_FORMAT property: not translated\n",
			fwspec->ids[0]);
		ret = -ENODEV;
	}
	if (ret) {
		iommu_put_resv_regions(dev, &ep->resv_regions);
		kfree(ep);
		return ERR_PTR(ret);
	}
	dev_iommu_priv_set(dev, ep);
	ep->dbg = debugfs_create_dir(dev_name(dev), vt->dbg);
	debugfs_create_file_unsafe("revoke", 0600, ep->dbg, ep, &vt_revoke_fops);
	return &vt->iommu;
}

static void vt_release_device(struct device *dev)
{
	struct vt_endpoint *ep = dev_iommu_priv_get(dev);

	vt_detach(ep);
	debugfs_remove_recursive(ep->dbg);
	iommu_put_resv_regions(dev, &ep->resv_regions);
	kfree(ep);
}

static struct iommu_group *vt_device_group(struct device *dev)
{
	return dev_is_pci(dev) ? pci_device_group(dev) : generic_device_group(dev);
}

static void vt_get_resv_regions(struct device *dev, struct list_head *head)
{
	struct vt_endpoint *ep = dev_iommu_priv_get(dev);
	struct iommu_resv_region *entry, *copy;
	bool msi = false;

	list_for_each_entry(entry, &ep->resv_regions, list) {
		msi |= entry->type == IOMMU_RESV_MSI;
		copy = kmemdup(entry, sizeof(*entry), GFP_KERNEL);
		if (!copy)
			return;
		list_add_tail(&copy->list, head);
	}
	/* No MSI doorbell window from the device: MSIs are mapped by the DMA layer at a fixed IOVA. */
	if (!msi) {
		entry = iommu_alloc_resv_region(VT_SW_MSI_BASE, VT_SW_MSI_SIZE,
						IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_MMIO,
						IOMMU_RESV_SW_MSI, GFP_KERNEL);
		if (entry)
			list_add_tail(&entry->list, head);
	}
}

static int vt_of_xlate(struct device *dev, const struct of_phandle_args *args)
{
	if (args->args_count != 1)
		return -EINVAL;
	return iommu_fwspec_add_ids(dev, args->args, 1);
}

static bool vt_capable(struct device *dev, enum iommu_cap cap)
{
	return cap == IOMMU_CAP_CACHE_COHERENCY || cap == IOMMU_CAP_DEFERRED_FLUSH;
}

/* Without BYPASS_CONFIG there is no identity domain: keep passthrough requests translated. */
static int vt_def_domain_type(struct device *dev)
{
	struct vt_endpoint *ep = dev_iommu_priv_get(dev);

	return ep->vt->bypass ? 0 : IOMMU_DOMAIN_DMA;
}

static const struct iommu_ops vt_ops = {
	.capable = vt_capable,
	.domain_alloc_paging = vt_domain_alloc_paging,
	.probe_device = vt_probe_device,
	.release_device = vt_release_device,
	.device_group = vt_device_group,
	.get_resv_regions = vt_get_resv_regions,
	.of_xlate = vt_of_xlate,
	.def_domain_type = vt_def_domain_type,
	.identity_domain = &vt_identity_domain,
	.default_domain_ops = &vt_domain_ops,
	.owner = THIS_MODULE,
};

/* --- events: translation faults (virtio 1.2 section 5.13.6.9) --------------------------------- */

static void vt_fill_event(struct vt_dev *vt, struct virtio_iommu_fault *evt, gfp_t gfp)
{
	struct scatterlist sg;

	sg_init_one(&sg, evt, sizeof(*evt));
	if (virtqueue_add_inbuf(vt->evt_vq, &sg, 1, evt, gfp))
		dev_err_ratelimited(&vt->vdev->dev, "cannot give an event buffer back\n");
}

static void vt_event_done(struct virtqueue *vq)
{
	struct vt_dev *vt = vq->vdev->priv;
	struct virtio_iommu_fault *evt;
	unsigned int len;

	while ((evt = virtqueue_get_buf(vq, &len))) {
		u32 flags = le32_to_cpu(evt->flags);
		u64 addr = le64_to_cpu(evt->address);

		if (len >= sizeof(*evt)) {
			atomic64_inc(&vt->n.faults);
			atomic64_set(&vt->n.last_fault, addr);
			dev_err_ratelimited(&vt->vdev->dev,
					    "%s fault from EP %u at %#llx [%s%s]\n",
					    evt->reason == VIRTIO_IOMMU_FAULT_R_MAPPING ? "page" :
					    evt->reason == VIRTIO_IOMMU_FAULT_R_DOMAIN ? "domain" : "unknown",
					    le32_to_cpu(evt->endpoint), addr,
					    flags & VIRTIO_IOMMU_FAULT_F_READ ? "R" : "",
					    flags & VIRTIO_IOMMU_FAULT_F_WRITE ? "W" : "");
		}
		vt_fill_event(vt, evt, GFP_ATOMIC);
	}
	virtqueue_kick(vq);
}

static int vt_stats_show(struct seq_file *s, void *unused)
{
	struct vt_dev *vt = s->private;

	seq_printf(s, "attach_table=%lld invalidate_range=%lld invalidate_asid=%lld ",
		   atomic64_read(&vt->n.attach_table), atomic64_read(&vt->n.invalidate_range),
		   atomic64_read(&vt->n.invalidate_asid));
	seq_printf(s, "invalidate_domain=%lld faults=%lld last_fault=%#llx revoked=%lld\n",
		   atomic64_read(&vt->n.invalidate_domain),
		   atomic64_read(&vt->n.faults), atomic64_read(&vt->n.last_fault),
		   atomic64_read(&vt->n.revoked));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vt_stats);

/* --- the virtio driver ------------------------------------------------------------------------ */

static int vt_probe(struct virtio_device *vdev)
{
	struct virtqueue_info vqs_info[] = { { "request" }, { "event", vt_event_done } };
	struct virtqueue *vqs[2];
	struct vt_dev *vt;
	unsigned int i, nr_events;
	int ret;

	if (!virtio_has_feature(vdev, VIRTIO_F_VERSION_1) ||
	    !virtio_has_feature(vdev, LKVM_VIOMMU_F_ATTACH_TABLE) ||
	    !virtio_has_feature(vdev, VIRTIO_IOMMU_F_PROBE)) {
		dev_err(&vdev->dev, "no page-table handover (features ATTACH_TABLE and PROBE): not binding\n");
		return -ENODEV;
	}
	vt = devm_kzalloc(&vdev->dev, sizeof(*vt), GFP_KERNEL);
	if (!vt)
		return -ENOMEM;
	vt->vdev = vdev;
	spin_lock_init(&vt->req_lock);
	ida_init(&vt->domain_ids);
	ida_init(&vt->asids);
	vt->input_end = U64_MAX;
	vt->last_domain = U32_MAX;
	virtio_cread_le_feature(vdev, VIRTIO_IOMMU_F_INPUT_RANGE, struct virtio_iommu_config,
				input_range.start, &vt->input_start);
	virtio_cread_le_feature(vdev, VIRTIO_IOMMU_F_INPUT_RANGE, struct virtio_iommu_config,
				input_range.end, &vt->input_end);
	virtio_cread_le_feature(vdev, VIRTIO_IOMMU_F_DOMAIN_RANGE, struct virtio_iommu_config,
				domain_range.start, &vt->first_domain);
	virtio_cread_le_feature(vdev, VIRTIO_IOMMU_F_DOMAIN_RANGE, struct virtio_iommu_config,
				domain_range.end, &vt->last_domain);
	virtio_cread_le(vdev, struct virtio_iommu_config, probe_size, &vt->probe_size);
	if (!vt->probe_size || vt->probe_size > VT_MAX_PROBE_SIZE || vt->input_end <= vt->input_start ||
	    vt->last_domain <= vt->first_domain) {
		dev_err(&vdev->dev, "unusable configuration (probe_size %u, domains %u-%u)\n",
			vt->probe_size, vt->first_domain, vt->last_domain);
		return -EINVAL;
	}
	vt->bypass = virtio_has_feature(vdev, VIRTIO_IOMMU_F_BYPASS_CONFIG);
	if (vt->bypass)
		vt->identity_id = vt->first_domain++;
	vt->req_buf_len = max3(sizeof(struct lkvm_viommu_req_attach_table),
			       sizeof(struct lkvm_viommu_req_invalidate),
			       sizeof(struct virtio_iommu_req_probe) + vt->probe_size +
				       sizeof(struct virtio_iommu_req_tail));
	vt->req_buf = devm_kzalloc(&vdev->dev, vt->req_buf_len, GFP_KERNEL);
	if (!vt->req_buf)
		return -ENOMEM;

	ret = virtio_find_vqs(vdev, 2, vqs, vqs_info, NULL);
	if (ret)
		return ret;
	vt->req_vq = vqs[0];
	vt->evt_vq = vqs[1];
	vdev->priv = vt;
	nr_events = vt->evt_vq->num_free;
	vt->events = devm_kcalloc(&vdev->dev, nr_events, sizeof(*vt->events), GFP_KERNEL);
	if (!vt->events) {
		ret = -ENOMEM;
		goto err_vqs;
	}
	virtio_device_ready(vdev);
	for (i = 0; i < nr_events; i++)
		vt_fill_event(vt, &vt->events[i], GFP_KERNEL);
	virtqueue_kick(vt->evt_vq);

	vt->dbg = debugfs_create_dir(dev_name(&vdev->dev), vt_debugfs);
	debugfs_create_file("stats", 0400, vt->dbg, vt, &vt_stats_fops);
	ret = iommu_device_sysfs_add(&vt->iommu, &vdev->dev, NULL, "%s", dev_name(&vdev->dev));
	if (ret)
		goto err_dbg;
	mutex_lock(&vt_devices_lock);
	list_add(&vt->node, &vt_devices);
	mutex_unlock(&vt_devices_lock);
	ret = iommu_device_register(&vt->iommu, &vt_ops, vdev->dev.parent);
	if (ret)
		goto err_list;
	dev_info(&vdev->dev, "input address: %u bits, page tables handed over (Arm LPAE stage-1)%s\n",
		 order_base_2(vt->input_end), vt->bypass ? ", bypass domain" : "");
	return 0;

err_list:
	mutex_lock(&vt_devices_lock);
	list_del(&vt->node);
	mutex_unlock(&vt_devices_lock);
	iommu_device_sysfs_remove(&vt->iommu);
err_dbg:
	debugfs_remove_recursive(vt->dbg);
	virtio_reset_device(vdev);
err_vqs:
	vdev->config->del_vqs(vdev);
	return ret;
}

static void vt_remove(struct virtio_device *vdev)
{
	struct vt_dev *vt = vdev->priv;

	iommu_device_sysfs_remove(&vt->iommu);
	iommu_device_unregister(&vt->iommu);
	mutex_lock(&vt_devices_lock);
	list_del(&vt->node);
	mutex_unlock(&vt_devices_lock);
	virtio_reset_device(vdev);
	vdev->config->del_vqs(vdev);
	debugfs_remove_recursive(vt->dbg);
}

static unsigned int vt_features[] = {
	VIRTIO_IOMMU_F_INPUT_RANGE, VIRTIO_IOMMU_F_DOMAIN_RANGE, VIRTIO_IOMMU_F_PROBE,
	VIRTIO_IOMMU_F_BYPASS_CONFIG, LKVM_VIOMMU_F_ATTACH_TABLE,
};

static const struct virtio_device_id vt_id_table[] = {
	{ VIRTIO_ID_IOMMU, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

static struct virtio_driver vt_driver = {
	.driver.name = KBUILD_MODNAME,
	.id_table = vt_id_table,
	.feature_table = vt_features,
	.feature_table_size = ARRAY_SIZE(vt_features),
	.probe = vt_probe,
	.remove = vt_remove,
};

/*
 * Whether some virtio-mmio virtio-iommu in the device tree offers the feature, read from its
 * registers before any driver negotiates with it (virtio 1.2 section 4.2.2: DeviceFeaturesSel
 * selects which 32 feature bits DeviceFeatures shows). The region is not claimed yet when this
 * module is loaded before virtio_mmio, as it must be for the endpoints not to defer their probe.
 */
static bool vt_some_device_offers_tables(void)
{
	struct device_node *np;
	bool offered = false;

	for_each_compatible_node(np, NULL, "virtio,mmio") {
		void __iomem *regs;

		if (!of_property_present(np, "#iommu-cells") || !of_device_is_available(np))
			continue;
		regs = of_iomap(np, 0);
		if (!regs)
			continue;
		if (readl(regs + VIRTIO_MMIO_MAGIC_VALUE) == 0x74726976 &&
		    readl(regs + VIRTIO_MMIO_VERSION) == 2 &&
		    readl(regs + VIRTIO_MMIO_DEVICE_ID) == VIRTIO_ID_IOMMU) {
			writel(0, regs + VIRTIO_MMIO_DEVICE_FEATURES_SEL);
			offered |= readl(regs + VIRTIO_MMIO_DEVICE_FEATURES) &
				   BIT(LKVM_VIOMMU_F_ATTACH_TABLE);
		}
		iounmap(regs);
	}
	return offered;
}

static int __init vt_init(void)
{
	int ret;

	if (!vt_some_device_offers_tables()) {
		pr_info("no virtio-iommu offers page-table handover (feature %d): not loaded, use virtio_iommu\n",
			LKVM_VIOMMU_F_ATTACH_TABLE);
		return -ENODEV;
	}
	vt_debugfs = debugfs_create_dir(KBUILD_MODNAME, NULL);
	ret = register_virtio_driver(&vt_driver);
	if (ret)
		debugfs_remove_recursive(vt_debugfs);
	return ret;
}

static void __exit vt_exit(void)
{
	unregister_virtio_driver(&vt_driver);
	debugfs_remove_recursive(vt_debugfs);
}

module_init(vt_init);
module_exit(vt_exit);
MODULE_DESCRIPTION("virtio-iommu with page-table handover (lkvm's ATTACH_TABLE/INVALIDATE)");
MODULE_LICENSE("GPL");
