"""openstacksdk, unmodified, imports an image through the shim's images API.

Usage: /usr/bin/python3 openstacksdk_import.py SHIM_URL TOKEN SOURCE_URL OUTPUT_FILE

The calls of sdk 0.101 (Debian's python3-openstacksdk): create_image with
no data (a queued record), import_image with web-download, wait for
active, get_image, download_image (which checks the md5 of the bytes
against the image's checksum), add_tag, delete_image. Newer SDKs send the
same two requests from create_image(use_import=True, import_method=...).
Prints "id=<image id>" and "checksum=<md5>" on success.
"""
import os
import sys

import openstack

shim, token, source, output = sys.argv[1:5]
if os.environ.get("TEST_VERBOSE"):
    openstack.enable_logging(debug=True, http_debug=True)
conn = openstack.connection.Connection(
    auth_type="admin_token",
    auth={"endpoint": shim + "/v2", "token": token},
    image_api_version="2",
)
img = conn.image.create_image(
    "sdk-image", disk_format="qcow2", container_format="bare",
    tags=["sdk"], os_distro="cirros",
)
if img.status != "queued" or "web-download" not in img.image_import_methods:
    sys.exit("created image: status %s, import methods %r" % (img.status, img.image_import_methods))
conn.image.import_image(img, method="web-download", uri=source)
img = openstack.resource.wait_for_status(conn.image, img, "active", ["killed"], 0.5, 120)
got = conn.image.get_image(img.id)
# The shim converts (Glance's image_conversion, output_format raw).
if got.status != "active" or got.disk_format != "raw" or not got.checksum or not got.size or got.os_distro != "cirros":
    sys.exit("get_image: %r" % got)
conn.image.download_image(got, output=output)
conn.image.add_tag(got, "downloaded")
tags = conn.image.get_image(got.id).tags
if sorted(tags) != ["downloaded", "sdk"]:
    sys.exit("tags after add_tag: %r" % tags)
print("id=%s" % got.id)
print("checksum=%s" % got.checksum)
conn.image.delete_image(got, ignore_missing=False)
if conn.image.find_image(got.id) is not None:
    sys.exit("the image is still there after delete_image")
