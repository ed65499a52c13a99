/* SPDX-License-Identifier: (GPL-2.0 OR BSD-3-Clause) */
/*
 * Page-table handover for virtio-iommu: lkvm's experimental extension. Not part of any virtio
 * specification; the rules, the sources of the numbers and the differences from the published
 * proposals are in iommu/page_tables.md. This one header is shared by the device (lkvm, C++) and
 * our guest driver (guest-images/viommu-tables/, a Linux module), so both sides read one layout.
 * Everything is little-endian; every request starts with virtio_iommu_req_head and ends with
 * virtio_iommu_req_tail (virtio 1.2 section 5.13.6).
 */
#ifndef LKVM_VIRTIO_IOMMU_TABLES_H
#define LKVM_VIRTIO_IOMMU_TABLES_H

#include <linux/types.h>
#include <linux/virtio_iommu.h>

/* Feature bit: the device accepts ATTACH_TABLE and INVALIDATE. */
#define LKVM_VIOMMU_F_ATTACH_TABLE 8

/* Request types. */
#define LKVM_VIOMMU_T_ATTACH_TABLE 0x06
#define LKVM_VIOMMU_T_INVALIDATE 0x07

/* Page-table formats. */
#define LKVM_VIOMMU_FMT_ARM_LPAE_S1 1 /* Arm VMSAv8-64 stage-1 translation table */

/* ATTACH_TABLE: attach `endpoint` to `domain`, whose address space is the guest's own table. */
struct lkvm_viommu_req_attach_table {
	struct virtio_iommu_req_head head;
	__le32 domain;
	__le32 endpoint;
	__le16 format; /* LKVM_VIOMMU_FMT_* */
	__le16 asid;
	__le64 tcr;  /* TCR_EL1 layout: T0SZ, EPD0, TG0, IPS, HPD0 are read; see page_tables.md */
	__le64 ttbr; /* TTBR0_EL1 layout: BADDR; CnP and the ASID field are ignored */
	__le64 mair; /* kept, not interpreted: device accesses are coherent */
	__u8 reserved[28];
	struct virtio_iommu_req_tail tail;
};

/* INVALIDATE scope: exactly one bit. */
#define LKVM_VIOMMU_INV_DOMAIN (1 << 0) /* everything cached for the domain */
#define LKVM_VIOMMU_INV_ASID (1 << 1)   /* non-global entries tagged with `asid` */
#define LKVM_VIOMMU_INV_RANGE (1 << 2)  /* [virt_start, virt_start + (nr_pages << granule)) */

/* INVALIDATE caches: IOTLB is the only cache this device has. */
#define LKVM_VIOMMU_INV_CACHE_IOTLB (1 << 0)

/* INVALIDATE flags. */
#define LKVM_VIOMMU_INV_F_PASID (1 << 0) /* not supported: answered with S_UNSUPP */
#define LKVM_VIOMMU_INV_F_ASID (1 << 1)  /* `asid` is valid (required by INV_ASID) */
#define LKVM_VIOMMU_INV_F_LEAF (1 << 2)  /* only leaf entries changed */

struct lkvm_viommu_req_invalidate {
	struct virtio_iommu_req_head head;
	__le16 scope;  /* LKVM_VIOMMU_INV_DOMAIN / _ASID / _RANGE */
	__le16 caches; /* LKVM_VIOMMU_INV_CACHE_* */
	__le16 flags;  /* LKVM_VIOMMU_INV_F_* */
	__u8 reserved1[2];
	__le32 domain;
	__le32 pasid; /* must be 0 */
	__u8 reserved2[4];
	__le64 asid;
	__le64 virt_start;
	__le64 nr_pages;
	__u8 granule; /* log2 of the page size the range counts in, 12..48 */
	__u8 reserved3[11];
	struct virtio_iommu_req_tail tail;
};

/* PROBE property: the table format an endpoint accepts (only with LKVM_VIOMMU_F_ATTACH_TABLE). */
#define LKVM_VIOMMU_PROBE_T_TABLE_FORMAT 6

#define LKVM_VIOMMU_TABLE_F_HW_ACCESS (1ULL << 0) /* the device sets AF itself (lkvm: never) */
#define LKVM_VIOMMU_TABLE_F_HW_DIRTY (1ULL << 1)  /* the device updates dirty state (lkvm: never) */
#define LKVM_VIOMMU_TABLE_F_SHADOW (1ULL << 8)    /* INVALIDATE also after creating mappings */

struct lkvm_viommu_probe_table_format {
	struct virtio_iommu_probe_property head; /* length = sizeof(*this) - sizeof(head) = 28 */
	__le16 format;
	__u8 asid_bits;   /* 8 or 16 */
	__u8 input_bits;  /* largest input address size: 64 - smallest T0SZ accepted */
	__u8 output_bits; /* output (guest-physical) address size */
	__u8 reserved[7];
	__le64 pgsize_bitmap; /* granules and block sizes the walker accepts */
	__le64 flags;         /* LKVM_VIOMMU_TABLE_F_* */
};

#endif /* LKVM_VIRTIO_IOMMU_TABLES_H */
