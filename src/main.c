/* main: placeholder entry point until the worker loop lands. */
int main(void)
{
    return 0;
}
