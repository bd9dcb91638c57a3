/**
 * An error caused by the user's input (bad path, wrong flag, incompatible files). The CLI prints its
 * message as one line and exits non-zero, without a stack trace; any other error is a bug and keeps its stack.
 */
export class UserError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
    this.name = 'UserError';
  }
}
