"""The two projects the tests of several sources and of the multi-project simulator use.

Made-up ids and credentials (never real ones): ``sales`` has a workspace, ``ops`` none.
"""

SALES, OPS = "0a1b2c3d4e5f40718293a4b5c6d7e8f9", "f9e8d7c6b5a44392817f6e5d4c3b2a10"
SALES_AK, SALES_SK = "SIMAK-SALES-TEST-0001", "sales-sk-do-not-leak-0123456789"
OPS_AK, OPS_SK = "SIMAK-OPS-TEST-0002", "ops-sk-do-not-leak-9876543210"
