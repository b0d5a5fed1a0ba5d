/// SFTP export of converted disks to a KVM host (libssh2). See issue #6.
public enum KDCTExport {}
